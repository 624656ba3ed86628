"""The abnormal-closure report: its numbers against pandas on the raw export, its files.

Expected numbers come from ``pandas.read_csv`` on the raw ICT export with the
cause-class table written out here, never from the product's loader, so a
loader or report bug cannot hide behind a shared code path.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from features.loading import load_tickets
from training import report_charts
from training.cli import main
from training.report import build_report, parse_period, prepare_data
from training.report_sections import (
    compute_causes,
    compute_handling_time,
    compute_overview,
    compute_process,
    compute_quality,
    find_recurrences,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECTION_KEYS = (
    "scope",
    "overview",
    "handling",
    "causes",
    "process",
    "quality",
    "measures",
)
# 形成原因 -> category, as the ICT export's README describes it.
ICT_CATEGORIES = {
    "软件设计缺陷": "system",
    "软件设计缺陷原因": "system",
    "设备日常损坏": "system",
    "基础环境": "system",
    "运行维护不当": "human",
    "运行维护类原因": "human",
    "操作不当等问题": "human",
    "用户操作不当原因": "human",
    "外部原因": "third_party",
    "外力破坏": "third_party",
    "设备质量问题": "third_party",
    "无报告": "other",
}
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def read_raw_ict(path: Path) -> pd.DataFrame:
    """Read the ICT export with pandas alone; ``0`` and empty cells mean empty."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")

    def cell(column: str) -> pd.Series:
        text = raw[column].str.strip()
        return text.where(~text.isin(["", "0"]), "")

    created = pd.to_datetime(cell("故障开始时间"))
    closed = pd.to_datetime(cell("故障结束时间").replace("", None))
    hours = pd.to_numeric(cell("故障时长（小时）").replace("", None))
    cause = cell("形成原因")
    return pd.DataFrame(
        {
            "id": cell("id"),
            "created": created,
            "department": cell("单位简称").replace("", "未填写"),
            "channel": cell("监控发现方式").replace("", "未填写"),
            "category": cause.map(ICT_CATEGORIES).where(cause != "", "other"),
            "escalated": cell("紧急抢修").map({"有": True, "无": False}),
            "hours": hours.fillna((closed - created).dt.total_seconds() / 3600),
        }
    )


def top_ten(values: pd.Series) -> list[str]:
    """Return the ten most frequent values, breaking ties by name as the report does."""
    counts = values.value_counts()
    return sorted(counts.index, key=lambda name: (-counts[name], name))[:10]


def visible_text(html: str) -> str:
    return DATA_URI.sub("", html)


@pytest.fixture(scope="module")
def raw(ict_path) -> pd.DataFrame:
    return read_raw_ict(ict_path)


@pytest.fixture(scope="module")
def ict_result(ict_path, ict_mapping):
    return load_tickets(ict_path, ict_mapping)


@pytest.fixture(scope="module")
def ict_data(ict_result):
    return prepare_data(ict_result)


@pytest.fixture(scope="module")
def ict_report(ict_result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    return build_report(
        ict_result, out, progress=False, source_name="ict_fault_records.csv"
    )


@pytest.fixture(scope="module")
def ict_html(ict_report) -> str:
    return ict_report.html.read_text(encoding="utf-8")


# Numbers against pandas ---------------------------------------------------


def test_overview_total_matches_pandas(ict_data, raw):
    overview = compute_overview(ict_data)
    assert overview.total_tickets == len(raw)
    assert overview.abnormal_tickets == int(raw["category"].notna().sum())
    assert overview.abnormal_share == pytest.approx(raw["category"].notna().mean())


def test_period_counts_match_pandas(ict_data, raw):
    overview = compute_overview(ict_data)
    day = raw["created"].dt.day
    expected = {
        "月初": (day <= 10).sum(),
        "月中": ((day > 10) & (day <= 20)).sum(),
        "月末": (day > 20).sum(),
    }
    for name, value in expected.items():
        assert overview.by_period.at[name, "tickets"] == value, name
        assert overview.by_period.at[name, "share"] == pytest.approx(
            value / len(raw)
        ), name
    assert overview.peak_periods == [max(expected, key=expected.get)]


def test_department_counts_match_pandas(ict_data, raw):
    overview = compute_overview(ict_data)
    counts = raw["department"].value_counts()
    leaders = top_ten(raw["department"])
    assert list(overview.by_department.index) == leaders + ["其他"]
    for name in leaders:
        assert overview.by_department.at[name, "tickets"] == counts[name], name
        assert overview.by_department.at[name, "share"] == pytest.approx(
            counts[name] / len(raw)
        )
    assert (
        overview.by_department.at["其他", "tickets"] == len(raw) - counts[leaders].sum()
    )
    assert overview.department_count == raw["department"].nunique()


def test_category_shares_match_pandas(ict_data, raw):
    overview = compute_overview(ict_data)
    shares = raw["category"].value_counts(normalize=True)
    counts = raw["category"].value_counts()
    for code in ("system", "human", "third_party", "other"):
        assert overview.by_category.at[code, "tickets"] == counts.get(code, 0), code
        assert overview.by_category.at[code, "share"] == pytest.approx(
            shares.get(code, 0.0)
        ), code
    assert overview.by_category.at["system", "name"] == "系统故障"


def test_category_example_has_top_cause(ict_data, ict_result):
    overview = compute_overview(ict_data)
    tickets = ict_result.tickets.set_index("ticket_id")
    for code, row in overview.by_category.iterrows():
        top_cause = top_ten(
            tickets.loc[tickets["category"] == code, "root_cause"].dropna()
        )[0]
        assert tickets.at[row.example_id, "root_cause"] == top_cause, code
        assert row.main_causes[0][0] == top_cause, code


def test_handling_hours_match_pandas(ict_data, raw):
    handling = compute_handling_time(ict_data)
    assert handling.known == raw["hours"].notna().sum()
    assert handling.overall["mean"] == pytest.approx(raw["hours"].mean())
    assert handling.overall["max"] == pytest.approx(raw["hours"].max())
    assert handling.overall["min"] == pytest.approx(raw["hours"].min())
    assert handling.overall["median"] == pytest.approx(raw["hours"].median())
    by_category = raw.groupby("category")["hours"]
    for code in ("system", "human", "third_party", "other"):
        assert handling.by_category.at[code, "mean"] == pytest.approx(
            by_category.mean()[code]
        ), code
        assert handling.by_category.at[code, "max"] == pytest.approx(
            by_category.max()[code]
        ), code
        assert handling.by_category.at[code, "min"] == pytest.approx(
            by_category.min()[code]
        ), code


def test_handling_by_department_matches_pandas(ict_data, raw):
    handling = compute_handling_time(ict_data)
    leaders = top_ten(raw["department"])
    means = raw[raw["department"].isin(leaders)].groupby("department")["hours"].mean()
    for name in leaders:
        assert handling.by_department.at[name, "mean"] == pytest.approx(means[name]), (
            name
        )
    assert handling.longest_department == means.idxmax()
    assert handling.shortest_department == means.idxmin()


def test_unusual_hours_follow_log_iqr(ict_data, raw):
    handling = compute_handling_time(ict_data)
    logs = np.log10(raw.loc[raw["hours"] > 0, "hours"])
    q1, q3 = logs.quantile(0.25), logs.quantile(0.75)
    low, high = 10 ** (q1 - 1.5 * (q3 - q1)), 10 ** (q3 + 1.5 * (q3 - q1))
    assert handling.bounds == pytest.approx((low, high))
    assert len(handling.long_tickets) == (raw["hours"] > high).sum()
    assert len(handling.short_tickets) == (raw["hours"] < low).sum()


def test_monthly_hours_match_pandas(ict_data, raw):
    handling = compute_handling_time(ict_data)
    months = raw.groupby(raw["created"].dt.to_period("M"))["hours"]
    assert list(handling.monthly.index) == list(
        pd.period_range("2016-01", "2017-12", freq="M")
    )
    for month, mean in months.mean().items():
        assert handling.monthly.at[month, "mean"] == pytest.approx(mean), str(month)
        assert handling.monthly.at[month, "tickets"] == months.size()[month], str(month)


def test_escalation_rate_matches_pandas(ict_data, raw):
    process = compute_process(ict_data)
    known = raw["escalated"].dropna()
    assert process.escalation_known == len(known)
    assert process.escalated == int(known.sum())
    assert process.escalation_rate == pytest.approx(known.mean())
    by_channel = raw.dropna(subset=["escalated"]).groupby("channel")["escalated"].mean()
    for channel, rate in by_channel.items():
        assert process.by_channel.at[channel, "escalation_rate"] == pytest.approx(
            rate
        ), channel
    assert process.limits_given is False


def test_coded_causes_match_pandas(ict_data, ict_path):
    raw = pd.read_csv(ict_path, dtype=str, keep_default_na=False)
    cause = raw["形成原因细类"].str.strip()
    coded = cause[~cause.isin(["", "0"])]
    causes = compute_causes(ict_data)
    assert causes.coded == len(coded)
    assert causes.uncoded == len(raw) - len(coded)
    assert causes.counts["tickets"].sum() == len(coded)
    assert set(causes.counts["source"]) == {"coded"}


def test_period_selection_matches_pandas(ict_result, raw):
    data = prepare_data(ict_result, period="2017-01..2017-06")
    months = raw["created"].dt.to_period("M")
    chosen = raw[(months >= "2017-01") & (months <= "2017-06")]
    overview = compute_overview(data)
    assert overview.total_tickets == len(chosen)
    assert overview.by_period["tickets"].sum() == len(chosen)
    assert (
        overview.by_period.at["月初", "tickets"]
        == (chosen["created"].dt.day <= 10).sum()
    )
    assert compute_handling_time(data).overall["mean"] == pytest.approx(
        chosen["hours"].mean()
    )
    assert data.period_label == "2017年1月至2017年6月"


# Rendered files -----------------------------------------------------------


def test_report_quotes_computed_numbers(ict_html, raw):
    text = visible_text(ict_html)
    known = raw["escalated"].dropna()
    assert f"异常工单 {len(raw)} 张" in text
    assert f"平均处理时长 {raw['hours'].mean():.2f} 小时" in text
    assert f"最长 {raw['hours'].max():.2f} 小时" in text
    assert f"升级率 {known.mean():.1%}" in text
    assert f"国网信通（{(raw['department'] == '国网信通').sum()} 张" in text


def test_report_has_every_section(ict_html):
    for key in SECTION_KEYS:
        assert f'<section id="{key}">' in ict_html, key


def test_report_has_no_placeholder(ict_report):
    for path in (ict_report.html, ict_report.markdown):
        text = visible_text(path.read_text(encoding="utf-8"))
        assert "XX" not in text, path.name


def test_report_links_nothing_external(ict_html):
    links = re.findall(
        r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", ict_html, flags=re.IGNORECASE
    )
    assert links, "expected internal links and inline images"
    external = [
        link for link in links if not link.startswith(("#", "data:image/png;base64,"))
    ]
    assert external == []
    assert "http://" not in visible_text(ict_html).split("<body>")[0]
    assert "@import" not in ict_html


def test_report_embeds_charts_inline(ict_report, ict_html):
    assert ict_html.count('<img src="data:image/png;base64,') == len(ict_report.figures)
    assert len(ict_report.figures) >= 8
    for path in ict_report.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name


def test_report_tables_written_as_csv(ict_report, raw):
    names = {path.name for path in ict_report.tables}
    assert {
        "overview_by_period.csv",
        "handling_by_category.csv",
        "measures_ranking.csv",
    } <= names
    assert all(path.parent.name == "report_tables" for path in ict_report.tables)
    period = pd.read_csv(
        ict_report.html.parent / "report_tables" / "overview_by_period.csv"
    )
    assert period["异常工单数"].sum() == len(raw)
    recurrences = pd.read_csv(
        ict_report.html.parent / "report_tables" / "quality_recurrences.csv"
    )
    assert recurrences["重复工单"].is_unique


def test_markdown_links_figures_beside_it(ict_report):
    markdown = ict_report.markdown.read_text(encoding="utf-8")
    assert ict_report.markdown.name == "report.md"
    for path in ict_report.figures:
        assert f"](report_figures/{path.name})" in markdown, path.name
    assert "## 六、改进措施与建议" in markdown


def test_report_states_missing_inputs(ict_html):
    text = visible_text(ict_html)
    assert "结案准确性需要结案分类模型" in text
    assert "映射文件没有设定处理时限" in text
    assert "没有客户满意度字段" in text
    assert "没有处理失误字段" in text
    assert "根因预测模型" in text


def test_empty_period_states_no_tickets(ict_result, tmp_path):
    files = build_report(
        ict_result, tmp_path / "report.html", period="2018-03", progress=False
    )
    html = files.html.read_text(encoding="utf-8")
    assert "所选期间（2018年3月）没有工单" in html
    assert "2016-01-01 至 2017-12-31" in html
    for key in SECTION_KEYS:
        assert f'<section id="{key}">' in html, key
    assert html.count("所选期间没有异常工单") == 5
    assert files.tables == ()


def test_progress_bar_goes_to_stderr(ict_result, tmp_path, capsys):
    build_report(ict_result, tmp_path / "report.html", period="2018-03", progress=True)
    captured = capsys.readouterr()
    assert "report" in captured.err
    assert "7/7" in captured.err
    assert captured.out == ""


# Small canonical files ----------------------------------------------------


def write_tickets(folder: Path, rows: list[dict], mapping: str) -> tuple[Path, Path]:
    data = folder / "tickets.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    mapping_path = folder / "mapping.toml"
    mapping_path.write_text(textwrap.dedent(mapping), encoding="utf-8")
    return data, mapping_path


SMALL_MAPPING = """
    name = "small"
    [fields]
    ticket_id = "ticket_id"
    created_at = "created_at"
    description = "description"
    department = "department"
    channel = "channel"
    system = "system"
    {durations}
    [extra]
    satisfaction = "satisfaction"
    handling_error = "handling_error"
    [targets.category]
    kind = "multiclass"
    column = "category"
    [targets.root_cause]
    kind = "multiclass"
    column = "root_cause"
    [targets.escalation]
    kind = "binary"
    column = "escalated"
    [targets.escalation.values]
    "true" = true
    "false" = false
    {limit}
"""
FIXED_LIMIT = """
    [targets.handling_hours]
    kind = "regression"
    column = "handling_hours"
    limit_hours = 4.0
"""
PRIORITY_LIMITS = """
    [targets.priority]
    kind = "multiclass"
    column = "priority"
    [targets.handling_hours]
    kind = "regression"
    column = "handling_hours"
    limit_by = "priority"
    [targets.handling_hours.limits]
    "高" = 2
    "低" = 6
"""
WITH_HOURS = 'handling_hours = "handling_hours"'


def small_rows() -> list[dict]:
    rows = []
    for i in range(12):
        rows.append(
            {
                "ticket_id": f"T{i:03d}",
                "created_at": f"2024-05-{1 + 2 * i:02d} 09:00:00",
                "description": f"第{i}号 系统登录失败，页面报错"
                if i % 3
                else "数据库连接超时",
                "department": "客服部" if i % 2 else "技术部",
                "channel": "电话",
                "system": "CRM",
                "category": ["system", "human", "third_party", ""][i % 4],
                "root_cause": "crash" if i % 4 == 0 else "",
                "escalated": ["true", "false", ""][i % 3],
                "handling_hours": 0.5 * (i + 1),
                "satisfaction": [5, 4, 3, ""][i % 4],
                "handling_error": ["是", "否", "否", ""][i % 4],
                "priority": ["高", "低", "中"][i % 3],
            }
        )
    return rows


def test_file_without_durations_states_it(tmp_path):
    rows = small_rows()
    for row in rows:
        del row["handling_hours"]
    data, mapping = write_tickets(
        tmp_path, rows, SMALL_MAPPING.format(durations="", limit="")
    )
    result = load_tickets(data, mapping)
    files = build_report(result, tmp_path / "out" / "report.html", progress=False)
    text = visible_text(files.html.read_text(encoding="utf-8"))
    assert "中没有处理时长" in text
    assert "措施只按工单数排序" in text
    assert "异常工单 9 张" in text
    assert "所选期间共有工单 12 张" in text
    assert "XX" not in text


def test_quality_fields_match_pandas(tmp_path):
    data, mapping = write_tickets(
        tmp_path, small_rows(), SMALL_MAPPING.format(durations=WITH_HOURS, limit="")
    )
    raw = pd.read_csv(data, dtype=str, keep_default_na=False)
    abnormal = raw[raw["category"] != ""]
    quality = compute_quality(prepare_data(load_tickets(data, mapping)))
    scores = pd.to_numeric(abnormal["satisfaction"].replace("", None)).dropna()
    assert quality.satisfaction["known"] == len(scores)
    assert quality.satisfaction["mean"] == pytest.approx(scores.mean())
    flags = abnormal["handling_error"]
    assert quality.handling_error["known"] == flags.isin(["是", "否"]).sum()
    assert quality.handling_error["rate"] == pytest.approx(
        (flags == "是").sum() / flags.isin(["是", "否"]).sum()
    )


def test_fixed_time_limit_matches_pandas(tmp_path):
    data, mapping = write_tickets(
        tmp_path,
        small_rows(),
        SMALL_MAPPING.format(durations=WITH_HOURS, limit=FIXED_LIMIT),
    )
    raw = pd.read_csv(data, keep_default_na=False, dtype=str)
    hours = pd.to_numeric(raw.loc[raw["category"] != "", "handling_hours"])
    process = compute_process(prepare_data(load_tickets(data, mapping)))
    assert process.limits_given is True
    assert process.limit_checked == len(hours)
    assert process.breaches == (hours > 4.0).sum()
    assert process.breach_rate == pytest.approx((hours > 4.0).mean())


def test_priority_time_limits_match_pandas(tmp_path):
    data, mapping = write_tickets(
        tmp_path,
        small_rows(),
        SMALL_MAPPING.format(durations=WITH_HOURS, limit=PRIORITY_LIMITS),
    )
    raw = pd.read_csv(data, keep_default_na=False, dtype=str)
    abnormal = raw[raw["category"] != ""]
    limit = abnormal["priority"].map({"高": 2.0, "低": 6.0})
    hours = pd.to_numeric(abnormal["handling_hours"])
    checked = limit.notna()
    breaches = int((hours[checked] > limit[checked]).sum())
    result = load_tickets(data, mapping)
    process = compute_process(prepare_data(result))
    assert process.limit_checked == checked.sum()
    assert process.breaches == breaches
    assert process.breach_rate == pytest.approx(breaches / checked.sum())
    files = build_report(result, tmp_path / "report.html", progress=False)
    text = visible_text(files.html.read_text(encoding="utf-8"))
    assert "处理时限按“priority”列设定：高 2.00 小时，低 6.00 小时" in text
    assert f"超时 {breaches} 张" in text
    assert "没有对应时限，不参与判断" in text


def test_taxonomy_cause_shown_by_name(tmp_path):
    data, mapping = write_tickets(
        tmp_path, small_rows(), SMALL_MAPPING.format(durations="", limit="")
    )
    files = build_report(
        load_tickets(data, mapping), tmp_path / "report.html", progress=False
    )
    html = files.html.read_text(encoding="utf-8")
    assert "系统崩溃或宕机" in html
    assert "建立故障切换与冗余机制，缩短恢复时间" in html


# Predictions --------------------------------------------------------------


def fake_predictions(tickets: pd.DataFrame, closure: bool) -> pd.DataFrame:
    predictions = pd.DataFrame(
        {
            "category": tickets["category"].to_numpy(),
            "root_cause": ["内存溢出"] * len(tickets),
            "category_probability": 0.9,
        },
        index=tickets["ticket_id"].to_numpy(),
    )
    if closure:
        predictions["closure_category"] = tickets["category"].to_numpy()
        predictions.iloc[:50, predictions.columns.get_loc("closure_category")] = (
            "system"
        )
        predictions["closure_probability"] = np.where(
            np.arange(len(tickets)) < 10, 0.3, 0.8
        )
    return predictions


def test_predicted_causes_are_marked(ict_result):
    tickets = ict_result.tickets
    data = prepare_data(
        ict_result, predictions=fake_predictions(tickets, closure=False)
    )
    causes = compute_causes(data)
    uncoded = tickets["root_cause"].isna().sum()
    predicted = causes.counts[causes.counts["source"] == "predicted"]
    assert causes.predicted == uncoded
    assert predicted["tickets"].sum() == uncoded
    assert set(predicted["cause"]) == {"内存溢出"}


def test_closure_accuracy_with_predictions(ict_result, tmp_path):
    tickets = ict_result.tickets
    predictions = fake_predictions(tickets, closure=True)
    data = prepare_data(ict_result, predictions=predictions)
    audit = compute_quality(data).closure
    expected = (
        predictions["closure_category"].to_numpy() == tickets["category"].to_numpy()
    ).mean()
    assert audit.compared == len(tickets)
    assert audit.accuracy == pytest.approx(expected)
    assert audit.low_confidence == 10
    files = build_report(
        ict_result, tmp_path / "report.html", predictions=predictions, progress=False
    )
    text = visible_text(files.html.read_text(encoding="utf-8"))
    assert f"结案准确率 {expected:.1%}" in text
    assert "（预测）" in text


def test_predictions_without_closure_say_so(ict_result):
    data = prepare_data(
        ict_result, predictions=fake_predictions(ict_result.tickets, closure=False)
    )
    quality = compute_quality(data)
    assert quality.closure is None
    assert quality.closure_missing == "closure_category"


def test_predictions_missing_column_rejected(ict_result):
    predictions = fake_predictions(ict_result.tickets, closure=False).drop(
        columns="root_cause"
    )
    with pytest.raises(ValueError, match="predictions lack columns root_cause"):
        prepare_data(ict_result, predictions=predictions)


# Recurrence rule ----------------------------------------------------------


def recurrence_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["ticket_id", "created_at", "system", "description"]
    )
    frame["created_at"] = pd.to_datetime(frame["created_at"])
    frame["closed_at"] = frame["created_at"] + pd.Timedelta(hours=1)
    return frame


def test_recurrences_pair_near_duplicates():
    text = "协同办公系统多个节点告警，用户访问缓慢，重启服务后恢复"
    frame = recurrence_frame(
        [
            ("a", "2024-01-01 08:00", "OA", "1月1日08:00，" + text),
            ("b", "2024-01-20 09:30", "oa", "1月20日09:30，" + text),
            ("c", "2024-01-25 10:00", "ERP", text),
            ("d", "2024-03-15 10:00", "OA", text),
            ("e", "2024-01-21 10:00", "OA", "财务报表导出失败，提示权限不足"),
            ("f", "2024-01-22 10:00", "", text),
        ]
    )
    pairs = find_recurrences(frame, window_days=30, threshold=0.8)
    assert list(zip(pairs["first_id"], pairs["repeat_id"])) == [("a", "b")]
    assert pairs.loc[0, "system"] == "oa"
    assert pairs.loc[0, "days_apart"] == pytest.approx(19 + 1.5 / 24)
    assert pairs.loc[0, "similarity"] == pytest.approx(1.0)
    assert bool(pairs.loc[0, "after_closure"]) is True


def test_recurrences_respect_threshold():
    frame = recurrence_frame(
        [
            ("a", "2024-01-01", "OA", "协同办公系统登录失败"),
            ("b", "2024-01-02", "OA", "协同办公系统登录缓慢，页面打不开"),
        ]
    )
    loose = find_recurrences(frame, threshold=0.3)
    strict = find_recurrences(frame, threshold=0.95)
    assert len(loose) == 1
    assert strict.empty


def test_recurrences_of_empty_frame():
    pairs = find_recurrences(recurrence_frame([]))
    assert pairs.empty
    assert list(pairs.columns) == [
        "first_id",
        "repeat_id",
        "system",
        "days_apart",
        "similarity",
        "after_closure",
    ]


# Period, font and CLI -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-03", ("2017-03", "2017-03")),
        ("2017", ("2017-01", "2017-12")),
        ("2017-01..2017-12", ("2017-01", "2017-12")),
        ("2016..2017-06", ("2016-01", "2017-06")),
    ],
)
def test_parse_period_forms(text, expected):
    start, end = parse_period(text)
    assert (str(start), str(end)) == expected


@pytest.mark.parametrize("text", ["2017-13", "17-01", "2017-05..2017-01", "May"])
def test_parse_period_rejects_invalid(text):
    with pytest.raises(ValueError, match="period"):
        parse_period(text)


def test_missing_font_names_package(monkeypatch):
    monkeypatch.setattr(report_charts, "_covers_sample", lambda path: False)
    monkeypatch.setattr(report_charts.font_manager, "findSystemFonts", list)
    report_charts.find_cjk_font.cache_clear()
    try:
        with pytest.raises(report_charts.MissingFontError, match="fonts-noto-cjk"):
            report_charts.find_cjk_font()
    finally:
        report_charts.find_cjk_font.cache_clear()


def test_cli_report_writes_files(ict_path, ict_mapping, tmp_path):
    out = tmp_path / "march.html"
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--data",
            str(ict_path),
            "--mapping",
            str(ict_mapping),
            "--period",
            "2017-03",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert (tmp_path / "march.md").is_file()
    assert "2017年3月" in out.read_text(encoding="utf-8")


def test_cli_rejects_invalid_period(ict_path, ict_mapping, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--data",
            str(ict_path),
            "--mapping",
            str(ict_mapping),
            "--period",
            "2017-13",
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 2
    assert "period '2017-13' is invalid" in result.output


def test_cli_model_needs_scorer_module(ict_path, ict_mapping, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "models.scorer", None)
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--data",
            str(ict_path),
            "--mapping",
            str(ict_mapping),
            "--model",
            "models:/ticket-triage@champion",
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 1
    assert "module models.scorer could not be imported" in result.output


# Browser ------------------------------------------------------------------


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found; install Debian chromium"
)
def test_report_renders_in_chromium(ict_report, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    artifacts = (
        Path(os.environ["TRIAGE_ARTIFACTS"])
        if os.environ.get("TRIAGE_ARTIFACTS")
        else None
    )
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(ict_report.html.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => e.naturalWidth)"
            )
            for key in SECTION_KEYS:
                shot = tmp_path / f"report_{key}.png"
                page.locator(f"section#{key}").screenshot(path=str(shot))
                assert shot.stat().st_size > 1000, key
                if artifacts is not None:
                    artifacts.mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, artifacts / shot.name)
        finally:
            browser.close()
    assert images and all(width > 0 for width in images)
    outside = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert outside == []


def test_markdown_cells_show_html_as_text():
    from training.report_render import _markdown_cell

    cell = _markdown_cell("系统<script>alert(1)</script> a|b & c\n下一行")
    assert "<script>" not in cell
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in cell
    assert "a\\|b &amp; c 下一行" in cell
