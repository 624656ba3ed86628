"""Chinese text, tables and charts for each section of the abnormal-closure report.

Each ``*_section`` function takes the numbers computed in
:mod:`training.report_sections` and returns a :class:`Section` of blocks.
Where data is missing (an empty period, no durations, no predictions) the
section states what is missing instead of showing a number.
"""

from __future__ import annotations

import re

import pandas as pd

from features.inputs import MONTH_PERIODS

from .report_charts import (
    BAR_COLOR,
    PREDICTED_COLOR,
    bar_chart,
    hours_histogram,
    line_chart,
)
from .report_render import Figure, Notice, Paragraph, Section, Subheading, Table
from .report_sections import (
    CODED,
    HANDLING_ERROR_FIELD,
    OTHER_GROUP,
    PREDICTED,
    SATISFACTION_FIELD,
    Causes,
    HandlingTime,
    Measures,
    Overview,
    Process,
    Quality,
    ReportData,
    category_name,
    category_order,
    closest_first_tickets,
    labels,
)

PERIOD_DAYS = dict(zip(MONTH_PERIODS, ("1–10日", "11–20日", "21日至月底")))
SOURCE_NAMES = {CODED: "登记", PREDICTED: "预测"}
TABLE_ROWS = 10
EXCERPT_CHARACTERS = 60
NO_ABNORMAL = "所选期间没有异常工单，本节没有可统计的数据。"
_TIME = r"\d{1,2}\s*[:：时]\s*\d{2}\s*分?"
# A leading date and time (range) such as "6月6日15:10，", "6月6日14:10-14:53，"
# or "2016-06-06 15:10 ".
LEADING_DATE = re.compile(
    r"^\s*(?:\d{4}\s*[-/.年]\s*)?\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?\s*"
    rf"(?:{_TIME}(?:\s*[-—~至到]\s*{_TIME})?)?[，,、：:\s]*"
)


def count(value: int) -> str:
    return f"{int(value)} 张"


def percent(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.1%}"


def hours(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.2f} 小时"


def month_label(period: pd.Period) -> str:
    return f"{period.year}年{period.month}月"


def excerpt(text: object, limit: int = EXCERPT_CHARACTERS) -> str:
    """Shorten a description to its first characters, dropping a leading date."""
    if not isinstance(text, str):
        return ""
    plain = " ".join(LEADING_DATE.sub("", text).split())
    return plain if len(plain) <= limit else plain[:limit] + "…"


def enumerate_cn(parts: list[str]) -> str:
    """Join items as Chinese prose: 甲、乙和丙."""
    if len(parts) <= 1:
        return "".join(parts)
    return "、".join(parts[:-1]) + "和" + parts[-1]


def rows_table(
    name: str, caption: str, frame: pd.DataFrame, formats: dict[str, str]
) -> list:
    """Return a table block that shows the first rows, while its CSV keeps every row."""
    return [
        Table(
            name, caption, frame.reset_index(drop=True), formats, shown_rows=TABLE_ROWS
        )
    ]


def no_tickets_text(data: ReportData) -> str:
    if data.data_start is None:
        return f"所选期间（{data.period_label}）没有工单：文件 {data.source_name} 中没有可用的工单。"
    return (
        f"所选期间（{data.period_label}）没有工单。文件 {data.source_name} 中工单的创建时间为 "
        f"{data.data_start:%Y-%m-%d} 至 {data.data_end:%Y-%m-%d}，请选择这一范围内的月份。"
    )


# Scope --------------------------------------------------------------------


def scope_section(data: ReportData) -> Section:
    section = Section("scope", "引言与报告范围")
    section.blocks.append(
        Paragraph(
            "本报告回顾异常结案工单：统计其数量、类型、原因、处理时长和处理质量，"
            "找出处理流程中的薄弱环节，并按影响的工单数给出改进措施。"
        )
    )
    rejected = (
        f"其中 {data.rows_rejected} 行因缺少工单编号、创建时间无效或编号重复未纳入分析"
        if data.rows_rejected
        else "全部可用"
    )
    section.blocks.append(
        Paragraph(
            f"数据来源：{data.source_name}，共读取 {data.rows_read} 行，{rejected}。"
            f"分析期间：{data.period_label}，按工单创建时间划分。"
        )
    )
    if data.predictions is None:
        usage = "本报告没有使用模型预测；需要预测结果的统计项会注明缺少的模型。"
    else:
        usage = "本报告使用了模型预测结果；凡来自预测的数字均标为“预测”。"
    section.blocks.append(Paragraph(usage))
    return section


# Overview -----------------------------------------------------------------


def overview_section(data: ReportData, overview: Overview) -> Section:
    section = Section("overview", "一、异常工单概况")
    if overview.total_tickets == 0:
        section.blocks.append(Notice(no_tickets_text(data)))
        return section
    section.blocks += _total_blocks(data, overview)
    if overview.abnormal_tickets == 0:
        return section
    section.blocks += _period_blocks(overview)
    section.blocks += _department_blocks(overview)
    section.blocks += _category_blocks(overview)
    section.blocks += _monthly_count_blocks(overview)
    return section


def _total_blocks(data: ReportData, overview: Overview) -> list:
    column = f"（本文件为“{data.category_column}”列）" if data.category_column else ""
    empty = ""
    if data.category_empty_label:
        empty = f"原因为空的工单按映射归入“{data.category_empty_label}”。"
    blocks: list = [
        Subheading("异常工单总数及占比"),
        Paragraph(
            f"口径：带有原因分类的工单计为异常工单，即原因字段{column}经映射归入系统故障、"
            f"人为操作失误、第三方因素或其他原因之一的工单。{empty}"
        ),
        Paragraph(
            f"所选期间共有工单 {count(overview.total_tickets)}，其中异常工单 "
            f"{count(overview.abnormal_tickets)}，"
            f"占全部工单的 {percent(overview.abnormal_share)}。"
        ),
    ]
    if overview.abnormal_tickets == 0:
        blocks.append(
            Notice("所选期间的工单都没有原因分类，因此没有异常工单，其余各节没有数据。")
        )
    elif overview.abnormal_tickets == overview.total_tickets:
        blocks.append(
            Notice(
                "该文件只包含带原因分类的工单，占比因此为 100%；全部受理工单的总量不在文件中，"
                "无法计算异常工单在全部受理量中的比例。"
            )
        )
    return blocks


def _period_blocks(overview: Overview) -> list:
    frame = overview.by_period
    parts = [
        f"{name}（{PERIOD_DAYS[name]}）{count(row.tickets)}（{percent(row.share)}）"
        for name, row in frame.iterrows()
    ]
    peak = "与".join(overview.peak_periods)
    tied = "并列最多" if len(overview.peak_periods) > 1 else "最多"
    table = pd.DataFrame(
        {
            "时段": [f"{name}（{PERIOD_DAYS[name]}）" for name in frame.index],
            "异常工单数": frame["tickets"].to_numpy(),
            "占比": frame["share"].to_numpy(),
        }
    )
    return [
        Subheading("月内不同时段的异常工单数量"),
        Paragraph(
            "按创建日期所在的月内时段统计："
            + "，".join(parts)
            + f"。{peak}的异常工单{tied}。"
            "月末的天数随月份在 8 至 11 天之间，比较时需注意。"
        ),
        Table(
            "overview_by_period",
            "月内各时段的异常工单",
            table,
            {"异常工单数": "count", "占比": "percent"},
        ),
        Figure(
            "overview_by_period",
            "月内各时段的异常工单数",
            bar_chart(
                list(frame.index),
                frame["tickets"].tolist(),
                "月内各时段的异常工单数",
                "月内时段",
                "异常工单数（张）",
            ),
        ),
    ]


def _department_blocks(overview: Overview) -> list:
    frame = overview.by_department
    named = frame.drop(index=OTHER_GROUP, errors="ignore")
    leaders = [
        f"{name}（{count(row.tickets)}，占 {percent(row.share)}）"
        for name, row in named.head(3).iterrows()
    ]
    text = f"异常工单涉及 {overview.department_count} 个部门。最多的是{leaders[0]}"
    if len(leaders) > 1:
        text += "，其次是" + enumerate_cn(leaders[1:])
    text += "。"
    if len(frame) > len(named):
        text += f"表中列出异常工单最多的 {len(named)} 个部门（数量相同时按名称排序），其余部门并入“其他”。"
    table = pd.DataFrame(
        {
            "部门": frame.index,
            "异常工单数": frame["tickets"].to_numpy(),
            "占比": frame["share"].to_numpy(),
        }
    )
    formats = {"异常工单数": "count", "占比": "percent"}
    if "abnormal_rate" in frame.columns:
        table["部门异常率"] = frame["abnormal_rate"].to_numpy()
        formats["部门异常率"] = "percent"
        rate = frame["abnormal_rate"].drop(index=OTHER_GROUP, errors="ignore")
        text += (
            f"部门异常率（部门异常工单占其全部工单的比例）最高的是{rate.idxmax()}，"
            f"为 {percent(rate.max())}。"
        )
    return [
        Subheading("各部门的异常工单"),
        Paragraph(text),
        Table("overview_by_department", "各部门的异常工单", table, formats),
        Figure(
            "overview_by_department",
            "各部门的异常工单数",
            bar_chart(
                list(frame.index),
                frame["tickets"].tolist(),
                "各部门的异常工单数",
                "异常工单数（张）",
                "部门",
                horizontal=True,
            ),
        ),
    ]


def _category_blocks(overview: Overview) -> list:
    frame = overview.by_category
    sentences = []
    for code, row in frame.iterrows():
        if row.tickets == 0:
            sentences.append(f"{row['name']}：本期没有。")
            continue
        sentence = f"{row['name']} {count(row.tickets)}，占 {percent(row.share)}"
        if row.main_causes:
            causes = enumerate_cn([f"{name}（{n} 张）" for name, n in row.main_causes])
            sentence += f"，主要根因为{causes}"
        else:
            sentence += "，均未登记根因"
        if excerpt(row.example):
            sentence += f"；典型案例（工单 {row.example_id}）：“{excerpt(row.example)}”"
        sentences.append(sentence + "。")
    table = pd.DataFrame(
        {
            "类别": frame["name"].to_numpy(),
            "异常工单数": frame["tickets"].to_numpy(),
            "占比": frame["share"].to_numpy(),
            "主要根因": [
                "、".join(f"{n}（{k}）" for n, k in causes)
                for causes in frame["main_causes"]
            ],
            "典型案例工单": frame["example_id"].to_numpy(),
            "典型案例摘要": [excerpt(t) for t in frame["example"]],
        }
    )
    return [
        Subheading("异常工单类型分布"),
        *[Paragraph(s) for s in sentences],
        Table(
            "overview_by_category",
            "异常工单的类别分布",
            table,
            {"异常工单数": "count", "占比": "percent"},
        ),
        Figure(
            "overview_by_category",
            "各类别的异常工单数",
            bar_chart(
                frame["name"].tolist(),
                frame["tickets"].tolist(),
                "各类别的异常工单数",
                "类别",
                "异常工单数（张）",
            ),
        ),
    ]


def _monthly_count_blocks(overview: Overview) -> list:
    monthly = overview.monthly
    if len(monthly) < 2:
        return []
    peak = monthly.idxmax()
    return [
        Subheading("各月异常工单数"),
        Paragraph(
            f"所选期间共 {len(monthly)} 个月，"
            f"异常工单最多的是{month_label(peak)}（{count(monthly.max())}），"
            f"最少的是{month_label(monthly.idxmin())}（{count(monthly.min())}）。"
        ),
        Figure(
            "overview_monthly",
            "各月异常工单数",
            line_chart(
                [str(p) for p in monthly.index],
                {"异常工单数": monthly.tolist()},
                "各月异常工单数",
                "月份",
                "异常工单数（张）",
            ),
        ),
    ]


# Handling time ------------------------------------------------------------


def handling_section(data: ReportData, handling: HandlingTime) -> Section:
    section = Section("handling", "二、异常工单处理时长")
    if data.tickets.empty:
        section.blocks.append(Notice(NO_ABNORMAL))
        return section
    if not data.has_durations:
        section.blocks.append(
            Notice(
                f"文件 {data.source_name} 中没有处理时长：映射既未指定处理时长列（handling_hours），"
                "也未指定可用于计算时长的结案时间列（closed_at）。在映射的 [fields] 中加入其中之一后，"
                "本节和处理时限统计即可生成。"
            )
        )
        return section
    if handling.known == 0:
        section.blocks.append(
            Notice("所选期间的异常工单都没有处理时长，本节没有可统计的数据。")
        )
        return section
    section.blocks += _handling_overall_blocks(handling)
    section.blocks += _handling_category_blocks(handling)
    section.blocks += _handling_department_blocks(handling)
    section.blocks += _handling_distribution_blocks(data, handling)
    section.blocks += _handling_trend_blocks(handling)
    return section


def _handling_overall_blocks(handling: HandlingTime) -> list:
    stats = handling.overall
    missing = (
        f"（另有 {handling.missing} 张缺少时长，不参与统计）"
        if handling.missing
        else ""
    )
    return [
        Subheading("平均处理时长"),
        Paragraph(
            f"有处理时长的异常工单 {count(handling.known)}{missing}。"
            f"平均处理时长 {hours(stats['mean'])}，"
            f"最长 {hours(stats['max'])}，最短 {hours(stats['min'])}，"
            f"中位数 {hours(stats['median'])}。"
            "处理时长取自导出的时长列；该列为空时，用结案时间减去创建时间。"
        ),
    ]


HOUR_COLUMNS = {
    "工单数": "count",
    "平均（小时）": "hours",
    "中位数（小时）": "hours",
    "最长（小时）": "hours",
    "最短（小时）": "hours",
}


def _hour_table(names, stats: pd.DataFrame, first: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            first: list(names),
            "工单数": stats["tickets"].to_numpy(),
            "平均（小时）": stats["mean"].to_numpy(),
            "中位数（小时）": stats["median"].to_numpy(),
            "最长（小时）": stats["max"].to_numpy(),
            "最短（小时）": stats["min"].to_numpy(),
        }
    )


def _handling_category_blocks(handling: HandlingTime) -> list:
    frame = handling.by_category
    ranked = frame[frame["tickets"] > 0]
    longest, shortest = ranked["mean"].idxmax(), ranked["mean"].idxmin()
    text = (
        f"平均处理时长最长的类别是{frame.at[longest, 'name']}（{hours(frame.at[longest, 'mean'])}），"
        f"最短的是{frame.at[shortest, 'name']}（{hours(frame.at[shortest, 'mean'])}）。"
    )
    return [
        Subheading("不同类别的处理时长"),
        Paragraph(text),
        Table(
            "handling_by_category",
            "各类别的处理时长",
            _hour_table(frame["name"], frame, "类别"),
            HOUR_COLUMNS,
        ),
        Figure(
            "handling_by_category",
            "各类别的平均处理时长",
            bar_chart(
                ranked["name"].tolist(),
                ranked["mean"].round(2).tolist(),
                "各类别的平均处理时长",
                "类别",
                "平均处理时长（小时）",
            ),
        ),
    ]


def _handling_department_blocks(handling: HandlingTime) -> list:
    frame = handling.by_department
    named = len(frame.drop(index=OTHER_GROUP, errors="ignore"))
    text = ""
    if handling.longest_department is not None:
        longest, shortest = handling.longest_department, handling.shortest_department
        text = (
            f"在异常工单最多的 {named} 个部门中，平均处理时长最长的是{longest}"
            f"（{hours(frame.at[longest, 'mean'])}），"
            f"最短的是{shortest}（{hours(frame.at[shortest, 'mean'])}）。"
        )
    return [
        Subheading("不同部门的处理时长"),
        Paragraph(text or "各部门都没有处理时长。"),
        Table(
            "handling_by_department",
            "各部门的处理时长",
            _hour_table(frame.index, frame, "部门"),
            HOUR_COLUMNS,
        ),
    ]


def _unusual_table(
    data: ReportData, frame: pd.DataFrame, name: str, caption: str
) -> list:
    table = pd.DataFrame(
        {
            "工单": frame["ticket_id"].to_numpy(),
            "创建时间": frame["created_at"].to_numpy(),
            "部门": labels(frame["department"]).to_numpy(),
            "类别": [category_name(data.taxonomy, c) for c in frame["category"]],
            "处理时长（小时）": frame["handling_hours"].to_numpy(),
        }
    )
    return rows_table(
        name, caption, table, {"创建时间": "datetime", "处理时长（小时）": "hours"}
    )


def _handling_distribution_blocks(data: ReportData, handling: HandlingTime) -> list:
    blocks: list = [Subheading("处理时长分布")]
    if handling.bounds is None:
        blocks.append(
            Notice(
                "处理时长大于 0 的工单少于 4 张，无法按四分位距判断偏长或偏短的工单。"
            )
        )
        return blocks
    low, high = handling.bounds
    zero = int((handling.short_tickets["handling_hours"] == 0).sum())
    zero_text = f"，其中处理时长为 0 的 {zero} 张" if zero else ""
    blocks.append(
        Paragraph(
            "处理时长通常明显右偏，因此在对数尺度上判断：对数时长超出上下四分位数 1.5 倍四分位距的工单视为异常。"
            f"按此规则，处理时长超过 {hours(high)}的 {count(len(handling.long_tickets))}偏长，"
            f"低于 {hours(low)}的 {count(len(handling.short_tickets))}偏短{zero_text}。"
        )
    )
    blocks.append(
        Figure(
            "handling_histogram",
            "处理时长分布（对数刻度，虚线为偏长与偏短的界限）",
            hours_histogram(
                handling.hours.tolist(),
                "异常工单处理时长分布",
                "处理时长（小时，对数刻度）",
                "工单数（张）",
                handling.bounds,
                "偏长与偏短的界限",
            ),
        )
    )
    if len(handling.long_tickets):
        blocks += _unusual_table(
            data,
            handling.long_tickets,
            "handling_long_tickets",
            "处理时长偏长的工单（由长到短）",
        )
    if len(handling.short_tickets):
        blocks += _unusual_table(
            data,
            handling.short_tickets,
            "handling_short_tickets",
            "处理时长偏短的工单（由短到长）",
        )
    return blocks


def _handling_trend_blocks(handling: HandlingTime) -> list:
    monthly = handling.monthly
    known = monthly.dropna(subset=["mean"])
    blocks: list = [Subheading("处理时长趋势")]
    if len(known) < 2:
        blocks.append(
            Notice("所选期间只有一个月有处理时长，看不出趋势；请用更长的期间生成报告。")
        )
        return blocks
    highest, lowest = known["mean"].idxmax(), known["mean"].idxmin()
    blocks.append(
        Paragraph(
            f"按月计算，平均处理时长最高的是{month_label(highest)}"
            f"（{hours(known.at[highest, 'mean'])}），"
            f"最低的是{month_label(lowest)}（{hours(known.at[lowest, 'mean'])}）。"
            "个别长时工单会拉高当月平均值，中位数更能代表一般工单。"
        )
    )
    table = pd.DataFrame(
        {
            "月份": [str(p) for p in monthly.index],
            "工单数": monthly["tickets"].to_numpy(),
            "平均（小时）": monthly["mean"].to_numpy(),
            "中位数（小时）": monthly["median"].to_numpy(),
        }
    )
    blocks.append(
        Table(
            "handling_monthly",
            "各月处理时长",
            table,
            {"工单数": "count", "平均（小时）": "hours", "中位数（小时）": "hours"},
        )
    )
    blocks.append(
        Figure(
            "handling_monthly",
            "各月处理时长",
            line_chart(
                table["月份"].tolist(),
                {
                    "平均处理时长": monthly["mean"].tolist(),
                    "中位数": monthly["median"].tolist(),
                },
                "各月处理时长",
                "月份",
                "处理时长（小时）",
            ),
        )
    )
    return blocks


# Causes -------------------------------------------------------------------


def causes_section(data: ReportData, causes: Causes) -> Section:
    section = Section("causes", "三、异常工单原因分析")
    if data.tickets.empty:
        section.blocks.append(Notice(NO_ABNORMAL))
        return section
    section.blocks.append(
        Paragraph(
            f"已登记根因的异常工单 {count(causes.coded)}，未登记根因的 {count(causes.uncoded)}。"
        )
    )
    if causes.uncoded and not causes.predictions_given:
        section.blocks.append(
            Notice(
                "未登记根因的工单需要根因预测模型补全；本次没有提供预测结果（报告命令的 --model 参数），"
                "这些工单不计入下列各表。"
            )
        )
    elif causes.predictions_given:
        rest = causes.uncoded - causes.predicted
        tail = f"，其余 {rest} 张模型也没有给出根因" if rest else ""
        section.blocks.append(
            Paragraph(
                f"其中 {causes.predicted} 张由根因模型预测补全，表中来源标为“预测”{tail}。"
            )
        )
    present = set(causes.counts["category"])
    for code in category_order(data.tickets, data.taxonomy):
        if code in present:
            section.blocks += _category_cause_blocks(data, causes, code)
    if len(causes.counts):
        section.blocks.append(_cause_chart(causes))
    return section


def _category_cause_blocks(data: ReportData, causes: Causes, code: str) -> list:
    rows = causes.counts[causes.counts["category"] == code]
    total = int(rows["tickets"].sum())
    members = int((data.tickets["category"] == code).sum())
    name = rows["category_name"].iloc[0]
    category = data.taxonomy.category(code)
    with_cause = "有根因的" if causes.predictions_given else "已登记根因的"

    blocks: list = [
        Subheading(f"{name}（本类 {count(members)}，其中{with_cause} {count(total)}）")
    ]
    if category is not None and category.causes:
        kinds = "；".join(
            f"{c.name}：{c.description}" for c in category.causes if c.description
        )
        blocks.append(Paragraph(f"分类标准中的根因类型——{kinds}。"))

    top = rows.head(3)
    parts = [
        f"{r.cause_name}（{r.tickets} 张{'，预测' if r.source == PREDICTED else ''}）"
        for r in top.itertuples()
    ]
    blocks.append(
        Paragraph(f"本类共 {len(rows)} 种根因，最多的是{enumerate_cn(parts)}。")
    )

    table = pd.DataFrame(
        {
            "根因": rows["cause_name"].to_numpy(),
            "来源": rows["source"].map(SOURCE_NAMES).to_numpy(),
            "工单数": rows["tickets"].to_numpy(),
            "占本类比例": (rows["tickets"] / total).to_numpy(),
            "处理时长合计（小时）": rows["hours"].to_numpy(),
        }
    )
    blocks += rows_table(
        f"causes_{code}",
        f"{name}的根因",
        table,
        {"工单数": "count", "占本类比例": "percent", "处理时长合计（小时）": "hours"},
    )
    return blocks


def _cause_chart(causes: Causes) -> Figure:
    top = causes.counts.head(15)
    names = [
        f"{r.cause_name}{'（预测）' if r.source == PREDICTED else ''}"
        for r in top.itertuples()
    ]
    colors = [PREDICTED_COLOR if s == PREDICTED else BAR_COLOR for s in top["source"]]
    legend = "（橙色为预测补全）" if PREDICTED in set(top["source"]) else ""
    return Figure(
        "causes_top",
        f"工单数最多的根因{legend}",
        bar_chart(
            names,
            top["tickets"].tolist(),
            "工单数最多的根因",
            "工单数（张）",
            "根因",
            horizontal=True,
            colors=colors,
        ),
    )


# Process ------------------------------------------------------------------


PROCESS_COLUMNS = {
    "工单数": "count",
    "已知升级标记": "count",
    "升级": "count",
    "升级率": "percent",
    "已知时长": "count",
    "超时": "count",
    "超时率": "percent",
}


def _process_table(frame: pd.DataFrame, first: str) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            first: frame.index,
            "工单数": frame["tickets"].to_numpy(),
            "已知升级标记": frame["escalation_known"].to_numpy(),
            "升级": frame["escalated"].to_numpy(),
            "升级率": frame["escalation_rate"].to_numpy(),
        }
    )
    if "breaches" in frame.columns:
        table["已知时长"] = frame["limit_checked"].to_numpy()
        table["超时"] = frame["breaches"].to_numpy()
        table["超时率"] = frame["breach_rate"].to_numpy()
    return table


def process_section(data: ReportData, process: Process) -> Section:
    section = Section("process", "四、异常工单处理流程")
    if data.tickets.empty:
        section.blocks.append(Notice(NO_ABNORMAL))
        return section
    section.blocks += _escalation_blocks(data, process)
    section.blocks += _time_limit_blocks(data, process)
    section.blocks += _channel_blocks(process)
    section.blocks += [
        Subheading("按部门"),
        Table(
            "process_by_department",
            "各部门的升级与超时",
            _process_table(process.by_department, "部门"),
            PROCESS_COLUMNS,
        ),
    ]
    return section


def _escalation_blocks(data: ReportData, process: Process) -> list:
    column = (
        f"（本文件为“{data.escalation_column}”列）" if data.escalation_column else ""
    )
    blocks: list = [Subheading("升级（紧急抢修、督办）情况")]
    if process.escalation_known == 0:
        blocks.append(Notice(f"所选期间没有工单填写升级标记{column}，无法计算升级率。"))
        return blocks
    unknown = len(data.tickets) - process.escalation_known
    tail = f"；另有 {unknown} 张未填写，不参与计算" if unknown else ""
    blocks.append(
        Paragraph(
            f"填写了升级标记{column}的异常工单 {count(process.escalation_known)}，其中升级的 "
            f"{count(process.escalated)}，升级率 {percent(process.escalation_rate)}{tail}。"
        )
    )
    return blocks


def limit_rule_text(data: ReportData) -> str:
    rule = data.limit_rule
    if rule.fixed_hours is not None:
        return f"处理时限为 {hours(rule.fixed_hours)}"
    values = "，".join(
        f"{value} {hours(limit)}" for value, limit in rule.hours_by_value.items()
    )
    return f"处理时限按“{rule.by_column}”列设定：{values}"


def _time_limit_blocks(data: ReportData, process: Process) -> list:
    blocks: list = [Subheading("处理时限")]
    if not process.limits_given:
        blocks.append(
            Notice(
                "映射文件没有设定处理时限（目标的 limit_hours，或 limits 与 limit_by），"
                "因此不统计超时工单。在映射中设定时限后，本节按处理时长是否超过时限统计超时率。"
            )
        )
        return blocks
    rule = limit_rule_text(data)
    if process.limit_checked == 0:
        blocks.append(
            Notice(
                f"{rule}，但所选期间没有同时具备处理时长和时限的异常工单，无法判断是否超时。"
            )
        )
        return blocks
    unchecked = len(data.tickets) - process.limit_checked
    tail = (
        f"；另有 {unchecked} 张缺少处理时长或没有对应时限，不参与判断"
        if unchecked
        else ""
    )
    blocks.append(
        Paragraph(
            f"{rule}。可判断的 {count(process.limit_checked)}中，超时 {count(process.breaches)}，"
            f"超时率 {percent(process.breach_rate)}{tail}。"
        )
    )
    return blocks


def _channel_blocks(process: Process) -> list:
    frame = process.by_channel
    blocks: list = [Subheading("按发现渠道")]
    rated = frame[frame["escalation_known"] > 0]
    text = (
        f"异常工单来自 {len(frame)} 种发现渠道，"
        f"最多的是{frame.index[0]}（{count(frame['tickets'].iloc[0])}）。"
    )
    if len(rated):
        top = rated["escalation_rate"].idxmax()
        text += (
            f"升级率最高的渠道是{top}（{percent(rated.at[top, 'escalation_rate'])}，"
            f"{rated.at[top, 'escalation_known']} 张中升级 {rated.at[top, 'escalated']} 张）。"
        )
    blocks.append(Paragraph(text))
    blocks.append(
        Table(
            "process_by_channel",
            "各发现渠道的升级与超时",
            _process_table(frame, "发现渠道"),
            PROCESS_COLUMNS,
        )
    )
    if len(rated):
        blocks.append(
            Figure(
                "process_by_channel",
                "各发现渠道的升级率",
                bar_chart(
                    list(rated.index),
                    rated["escalation_rate"].tolist(),
                    "各发现渠道的升级率",
                    "发现渠道",
                    "升级率",
                    percent=True,
                ),
            )
        )
    return blocks


# Quality ------------------------------------------------------------------


def quality_section(data: ReportData, quality: Quality) -> Section:
    section = Section("quality", "五、异常工单处理质量")
    if data.tickets.empty:
        section.blocks.append(Notice(NO_ABNORMAL))
        return section
    section.blocks += _closure_blocks(quality)
    section.blocks += _recurrence_blocks(data, quality)
    section.blocks += _handling_error_blocks(quality)
    section.blocks += _satisfaction_blocks(quality)
    return section


def _closure_blocks(quality: Quality) -> list:
    blocks: list = [Subheading("结案准确性")]
    if quality.closure_missing == "predictions":
        blocks.append(
            Notice(
                "结案准确性需要结案分类模型：它根据结案记录判断类别，再与登记的类别比较。"
                "本次没有提供预测结果（报告命令的 --model 参数），因此不作统计。"
            )
        )
        return blocks
    if quality.closure_missing == "closure_category":
        blocks.append(
            Notice(
                "提供的预测结果不含结案分类模型的输出（closure_category 列），因此不统计结案准确性。"
            )
        )
        return blocks
    audit = quality.closure
    low = ""
    if audit.low_confidence is not None:
        low = f"模型把握不足（概率低于 0.5）的有 {count(audit.low_confidence)}，建议人工复核。"
    blocks.append(
        Paragraph(
            f"结案分类模型根据结案记录判断的类别与登记类别比较：可比较的 {count(audit.compared)}中一致 "
            f"{count(audit.agreed)}，结案准确率 {percent(audit.accuracy)}。{low}"
        )
    )
    frame = audit.by_category
    table = pd.DataFrame(
        {
            "类别": frame["name"].to_numpy(),
            "可比较": frame["compared"].to_numpy(),
            "一致": frame["agreed"].to_numpy(),
            "准确率": frame["accuracy"].to_numpy(),
        }
    )
    blocks.append(
        Table(
            "quality_closure",
            "各类别的结案准确率（预测）",
            table,
            {"可比较": "count", "一致": "count", "准确率": "percent"},
        )
    )
    return blocks


def _recurrence_blocks(data: ReportData, quality: Quality) -> list:
    blocks: list = [
        Subheading("重复出现率"),
        Paragraph(
            f"判定规则：同一受影响系统在 {quality.window_days:g} 天内再次出现描述相近的工单，即为重复出现。"
            "描述去掉日期、时间、数字和地址后，按字符二元组词频向量计算余弦相似度，"
            f"不低于 {quality.threshold:.2f} 视为相近；未填写系统的工单不参与判定。"
        ),
        Paragraph(
            f"按此规则，{count(len(data.tickets))}异常工单中有 {count(quality.recurring_tickets)}"
            f"是此前工单的重复，重复出现率 {percent(quality.recurrence_rate)}。"
        ),
    ]
    pairs = quality.recurrences
    if len(pairs):
        blocks.append(
            Paragraph(
                f"其中 {count(quality.repeats_after_closure)}在前一张工单结案之后再次出现；"
                "其余的创建时前一张工单尚未结案（或结案时间未知），可能是同一故障的重复登记，"
                "而非问题再次发生。"
            )
        )
        closest = closest_first_tickets(pairs)
        systems = closest["system"].value_counts()
        top = enumerate_cn([f"{name}（{n} 张）" for name, n in systems.head(3).items()])
        blocks.append(Paragraph(f"重复最多的系统是{top}。"))
        table = pd.DataFrame(
            {
                "重复工单": closest["repeat_id"].to_numpy(),
                "最相近的前一张工单": closest["first_id"].to_numpy(),
                "系统": closest["system"].to_numpy(),
                "间隔（天）": closest["days_apart"].to_numpy(),
                "相似度": closest["similarity"].to_numpy(),
                "结案后再现": closest["after_closure"]
                .map({True: "是", False: "否"})
                .fillna("未知")
                .to_numpy(),
            }
        )
        blocks += rows_table(
            "quality_recurrences",
            "重复出现的工单（每张重复工单一行）",
            table,
            {"间隔（天）": "number", "相似度": "number"},
        )
    return blocks


def _handling_error_blocks(quality: Quality) -> list:
    blocks: list = [Subheading("处理过程中的失误率")]
    result = quality.handling_error
    if result is None:
        blocks.append(
            Notice(
                f"数据中没有处理失误字段（映射 [extra] 中名为 {HANDLING_ERROR_FIELD} 的列，取值如 是/否），"
                "因此不统计处理失误率。"
            )
        )
    elif result["known"] == 0:
        blocks.append(
            Notice(
                f"处理失误字段（{HANDLING_ERROR_FIELD}）在所选期间都没有填写是或否，无法计算失误率。"
            )
        )
    else:
        blocks.append(
            Paragraph(
                f"填写了处理失误标记的 {count(result['known'])}中，有失误的 {count(result['errors'])}，"
                f"失误率 {percent(result['rate'])}。"
            )
        )
    return blocks


def _satisfaction_blocks(quality: Quality) -> list:
    blocks: list = [Subheading("客户满意度")]
    result = quality.satisfaction
    if result is None:
        blocks.append(
            Notice(
                f"数据中没有客户满意度字段（映射 [extra] 中名为 {SATISFACTION_FIELD} 的数值列），"
                "因此不统计满意度。"
            )
        )
        return blocks
    if result["known"] == 0:
        blocks.append(
            Notice(
                f"满意度字段（{SATISFACTION_FIELD}）在所选期间没有数值，无法统计满意度。"
            )
        )
        return blocks
    blocks.append(
        Paragraph(
            f"有满意度评分的 {count(result['known'])}，平均评分 {result['mean']:.2f}。"
        )
    )
    distribution = result["distribution"]
    table = pd.DataFrame(
        {
            "评分": [f"{v:g}" for v in distribution.index],
            "工单数": distribution.to_numpy(),
            "占比": (distribution / result["known"]).to_numpy(),
        }
    )
    blocks.append(
        Table(
            "quality_satisfaction",
            "满意度评分分布",
            table,
            {"工单数": "count", "占比": "percent"},
        )
    )
    return blocks


# Measures -----------------------------------------------------------------


def measures_section(data: ReportData, measures: Measures) -> Section:
    section = Section("measures", "六、改进措施与建议")
    if data.tickets.empty:
        section.blocks.append(Notice(NO_ABNORMAL))
        return section
    ranking = measures.ranking
    if ranking.empty:
        section.blocks.append(Notice("没有登记或预测的根因，无法按根因排列改进措施。"))
        return section

    section.blocks.append(
        Paragraph(
            f"取工单数最多的 {len(measures.top_causes)} 种根因，"
            "把分类标准中对应的改进措施按其可覆盖的工单数和处理时长排序。"
            "根因不在分类标准中时，采用其所属类别的通用措施。"
        )
    )
    if not data.has_durations:
        section.blocks.append(Notice("文件中没有处理时长，措施只按工单数排序。"))
    first = ranking.iloc[0]
    section.blocks.append(
        Paragraph(
            f"覆盖工单最多的措施是“{ranking.index[0]}”，针对{enumerate_cn(first.categories)}，"
            f"涉及 {count(first.tickets)}，处理时长合计 {hours(first.hours)}。"
        )
    )

    section.blocks.append(_measures_table(ranking))
    section.blocks.append(
        Figure(
            "measures_ranking",
            "各改进措施可覆盖的工单数",
            bar_chart(
                list(ranking.index),
                ranking["tickets"].tolist(),
                "各改进措施可覆盖的工单数",
                "工单数（张）",
                "改进措施",
                horizontal=True,
            ),
        )
    )
    return section


def _measures_table(ranking: pd.DataFrame) -> Table:
    causes = [
        "、".join(
            f"{name}{'（预测）' if source == PREDICTED else ''}"
            for name, source in pairs
        )
        for pairs in ranking["causes"]
    ]
    table = pd.DataFrame(
        {
            "排名": range(1, len(ranking) + 1),
            "改进措施": ranking.index,
            "所属类别": ["、".join(names) for names in ranking["categories"]],
            "针对的根因": causes,
            "工单数": ranking["tickets"].to_numpy(),
            "处理时长合计（小时）": ranking["hours"].to_numpy(),
        }
    )
    formats = {"排名": "count", "工单数": "count", "处理时长合计（小时）": "hours"}
    return Table("measures_ranking", "改进措施排序", table, formats)


__all__ = [
    "causes_section",
    "excerpt",
    "handling_section",
    "measures_section",
    "overview_section",
    "process_section",
    "quality_section",
    "scope_section",
]
