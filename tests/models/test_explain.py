"""Reasons from the ONNX graphs: words and metadata values behind the top category."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.inputs import TOKENS, ticket_feeds
from features.text import DOC_TOKEN, PLACEHOLDERS, tokenize
from models.explain import explain
from models.scorer import Scorer

DATABASE_WORDS = {"数据库", "表空间", "表空间满", "写入", "无法写入", "满"}
TABLESPACE_TEXT = "数据库表空间满，业务系统无法写入"


@pytest.fixture(scope="module")
def demo_scorer(demo_bundle) -> Scorer:
    return Scorer(demo_bundle)


@pytest.fixture(scope="module")
def ict_scorer(ict_path, ict_mapping, tmp_path_factory) -> Scorer:
    """A bundle with only a category model of the ICT records, exported to ONNX.

    It is built here rather than with ``train``, because reasons need one fit
    with training's settings and ``train`` also calibrates and logs to MLflow.
    """
    from features.inputs import feature_frame
    from features.loading import load_tickets
    from models.bundle import TargetEntry, write_manifest
    from models.estimators import DEFAULT_CLASS_WEIGHT, fit_target
    from models.export import to_onnx
    from training.train import intake_spec

    load = load_tickets(ict_path, ict_mapping)
    spec = intake_spec(load.mapping)
    tickets = load.tickets[load.tickets["category"].notna()]
    model = fit_target(
        "category",
        "multiclass",
        feature_frame(tickets, spec),
        tickets["category"].to_numpy(),
        spec,
        n_jobs=1,
        class_weight=DEFAULT_CLASS_WEIGHT,
    )
    folder = tmp_path_factory.mktemp("ict-reasons") / "bundle"
    (folder / "targets").mkdir(parents=True)
    (folder / "targets" / "category.onnx").write_bytes(
        to_onnx(model, spec).SerializeToString()
    )
    entry = TargetEntry(
        name="category",
        kind="multiclass",
        field="category",
        file="targets/category.onnx",
        labels=[str(label) for label in model.labels],
    )
    write_manifest(
        folder,
        {
            "name": "ict-reasons",
            "feature_spec": spec.to_dict(),
            "targets": [entry.to_dict()],
        },
    )
    return Scorer(folder)


def ticket(description: str, **fields) -> dict:
    return {
        "ticket_id": "R-1",
        "created_at": pd.Timestamp("2025-06-16 10:00"),
        "title": "",
        "description": description,
        "department": None,
        "channel": None,
        "system": None,
        **fields,
    }


@pytest.fixture(scope="module")
def tablespace_tickets(ict_path, ict_mapping) -> list[dict]:
    """The tablespace text with the metadata of each real tablespace incident."""
    from features.loading import load_tickets

    tickets = load_tickets(ict_path, ict_mapping).tickets
    incidents = tickets[tickets["root_cause"] == "数据库表空间满"]
    return [dict(r, description=TABLESPACE_TEXT) for r in incidents.to_dict("records")]


def test_tablespace_reasons_name_database_words(demo_scorer):
    systems = ["财务系统", "ERP系统", "计费系统", "数据中台", None]
    tickets = [ticket(TABLESPACE_TEXT, system=system) for system in systems]
    for reasons in explain(demo_scorer, tickets):
        words = {w["token"] for w in reasons["words"]}
        assert words & DATABASE_WORDS, reasons
        assert not words & set(PLACEHOLDERS), reasons


def test_ict_reasons_are_written_words(ict_scorer, tablespace_tickets):
    """On the real records the reasons are words of the text, never masked values.

    The ICT intake descriptions never contain 表空间, and 数据库 occurs about as
    often in human as in system faults, so the test does not fix which words
    weigh most. It checks that no date, number or placeholder appears.
    """
    assert len(tablespace_tickets) >= 10
    text = "2017年3月12日10:30，" + TABLESPACE_TEXT + "，IP 10.1.2.3，单号 20170312001"
    written = set(tokenize(text)) - set(PLACEHOLDERS)
    for reasons in explain(ict_scorer, [dict(t, description=text) for t in tablespace_tickets]):
        words = {w["token"] for w in reasons["words"]}
        assert words, reasons
        assert words <= written, reasons
        assert DOC_TOKEN not in words
        assert not {w for w in words if any(ch.isdigit() for ch in w)}, reasons


def test_dates_and_placeholders_are_never_reasons(demo_scorer):
    text = "2017年3月12日10:30，" + TABLESPACE_TEXT + "，IP 10.1.2.3，单号 20170312001"
    [reasons] = explain(demo_scorer, [ticket(text, system="财务系统")])
    words = {w["token"] for w in reasons["words"]}
    assert not words & set(PLACEHOLDERS)
    assert DOC_TOKEN not in words
    assert not {w for w in words if any(ch.isdigit() for ch in w)}
    assert words & DATABASE_WORDS, reasons


def test_word_weight_averages_removal_and_addition(demo_scorer):
    entry = demo_scorer.target("category")
    text = "ERP系统数据库连接超时，用户无法登录，报错ORA-12541"
    [reasons] = explain(demo_scorer, [ticket(text)])
    top = reasons["words"][0]
    column = list(entry.labels).index(reasons["code"])
    feeds = ticket_feeds([ticket(text)], demo_scorer.spec)
    empty = {
        **{name: np.full((1, 1), -1.0, dtype=np.float32) for name in feeds},
        **{
            name: np.array([["\x00unseen"]], dtype=object)
            for name in demo_scorer.spec.categorical
        },
        TOKENS: np.array([[DOC_TOKEN]], dtype=object),
    }
    without = " ".join([DOC_TOKEN, *(t for t in tokenize(text) if t != top["token"])])
    alone = f"{DOC_TOKEN} {top['token']}"

    def probability(values) -> float:
        return float(demo_scorer._run(entry, values)[0, column])

    whole = probability(feeds)
    removed = probability({**feeds, TOKENS: np.array([[without]], dtype=object)})
    nothing = probability(empty)
    added = probability({**empty, TOKENS: np.array([[alone]], dtype=object)})
    assert reasons["probability"] == pytest.approx(whole, abs=1e-6)
    assert top["weight"] == pytest.approx(
        0.5 * ((whole - removed) + (added - nothing)), abs=1e-5
    )


def test_reasons_are_sorted_and_signed(demo_scorer):
    [reasons] = explain(
        demo_scorer,
        [ticket("邮件系统收不到外部邮件，退信提示对方服务器拒绝", system="邮件系统")],
    )
    weights = [w["weight"] for w in reasons["words"]]
    assert weights == sorted(weights, reverse=True)
    assert len(weights) <= 8
    assert all(abs(w) >= 1e-4 for w in weights)


def test_metadata_reasons_cover_known_values_only(demo_scorer):
    known = ticket(
        "系统无法登录", department="财务部", channel="电话", system="ERP系统"
    )
    unseen = ticket(
        "系统无法登录", department="从未见过的部门", channel=None, system="ERP系统"
    )
    [with_known, with_unseen] = explain(demo_scorer, [known, unseen])
    fields_known = {m["field"] for m in with_known["metadata"]}
    fields_unseen = {m["field"] for m in with_unseen["metadata"]}
    assert "department" not in fields_unseen
    assert "channel" not in fields_unseen
    assert fields_known <= {
        "department",
        "channel",
        "system",
        "hour",
        "weekday",
        "month_period",
    }
    shown = {m["field"]: m["value"] for m in with_known["metadata"]}
    if "system" in shown:
        assert shown["system"] == "ERP系统"


def test_empty_text_gives_no_word_reasons(demo_scorer):
    [reasons] = explain(demo_scorer, [ticket("")])
    assert reasons["words"] == []
    assert reasons["code"] in demo_scorer.target("category").labels


def test_regression_target_has_no_reasons(demo_scorer):
    assert explain(demo_scorer, [ticket("系统无法登录")], target="handling_hours") == [
        None
    ]
    assert explain(demo_scorer, [ticket("系统无法登录")], target="no-such-target") == [
        None
    ]


def test_reasons_match_scorer_answer(demo_scorer):
    tickets = [
        ticket("VPN连不上，提示证书过期"),
        ticket("报表数据和昨天对不上，少了一部分记录"),
    ]
    answers = demo_scorer.score(tickets, include=("reasons",))
    for answer in answers:
        assert answer["reasons"]["code"] == answer["category"]["code"]
        assert answer["reasons"]["probability"] == pytest.approx(
            answer["category"]["probability"]
        )
