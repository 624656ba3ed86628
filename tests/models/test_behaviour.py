"""Model behaviour on the real ICT records: invariances, odd texts, abstention, batches."""

import random
import re

import numpy as np
import pandas as pd
import pytest

from features.loading import load_tickets
from models.scorer import Scorer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ict_trained(ict_path, ict_mapping, tracking_dir):
    from training.train import train

    return train(
        ict_path,
        ict_mapping,
        model_name="ict-behaviour",
        register=False,
        progress=False,
        n_jobs=1,
    )


@pytest.fixture(scope="module")
def scorer(ict_trained):
    return Scorer(ict_trained.bundle_dir)


@pytest.fixture(scope="module")
def tickets(ict_path, ict_mapping):
    """Sixty real tickets as intake records, with varied descriptions."""
    frame = load_tickets(ict_path, ict_mapping).tickets
    sample = frame.sample(60, random_state=0)
    return [_intake_record(row) for row in sample.to_dict("records")]


def _intake_record(row):
    keep = ("ticket_id", "created_at", "description", "department", "channel", "system")
    record = {key: row[key] for key in keep}
    record.update(
        {key: row[key] for key in ("deployment", "user_reported", "anomaly_detail")}
    )
    return record


def _top_categories(scorer, records):
    return [answer["category"]["code"] for answer in scorer.score(records)]


DATE_TIME = re.compile(r"\d{1,2}月\d{1,2}日\s*\d{1,2}[:：]\d{2}")


def test_added_date_keeps_category(scorer, tickets):
    changed = [
        dict(t, description="2017年3月12日 10:30，" + t["description"]) for t in tickets
    ]
    assert _top_categories(scorer, changed) == _top_categories(scorer, tickets)


def test_changed_date_and_time_keep_category(scorer, tickets):
    dated = [t for t in tickets if DATE_TIME.search(t["description"])]
    assert len(dated) >= 20
    changed = [
        dict(t, description=DATE_TIME.sub("12月31日23:59", t["description"]))
        for t in dated
    ]
    assert _top_categories(scorer, changed) == _top_categories(scorer, dated)


def test_added_ticket_number_keeps_category(scorer, tickets):
    changed = [
        dict(t, description=t["description"] + f"（工单号INC2017{index:08d}）")
        for index, t in enumerate(tickets)
    ]
    assert _top_categories(scorer, changed) == _top_categories(scorer, tickets)


def test_added_time_keeps_probabilities(scorer, tickets):
    """A time masks to a token that is not scored, so even the probabilities stay."""
    changed = [
        dict(t, description=t["description"] + " 14:05恢复") for t in tickets[:10]
    ]
    extra = [dict(t, description=t["description"] + " 恢复") for t in tickets[:10]]
    np.testing.assert_allclose(
        scorer.predict(changed)["category"], scorer.predict(extra)["category"]
    )


def test_single_character_words_answered(scorer, tickets):
    record = dict(tickets[0], description="网 断 了 卡 慢 停 机")
    answer = scorer.score([record])[0]
    assert answer["category"]["code"] in {"human", "system", "other", "third_party"}
    total = answer["category"]["probability"] + sum(
        a["probability"] for a in answer["alternatives"]
    )
    assert total == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(answer["category"]["probability"])


@pytest.mark.parametrize("description", ["", "   ", "，。！", "😀🔥"])
def test_wordless_description_needs_review(scorer, tickets, description):
    record = dict(tickets[0], description=description)
    answer = scorer.score([record])[0]
    assert answer["category"]["code"] in {"human", "system", "other", "third_party"}
    assert answer["needs_review"] is True
    assert answer["targets"]["category"]["needs_review"] is True
    assert answer["targets"]["root_cause"]["needs_review"] is True


def test_empty_description_answered_from_metadata(scorer, tickets):
    """Two tickets without text but with other metadata may get other probabilities."""
    first = dict(tickets[0], description="")
    others = [dict(t, description="") for t in tickets[1:]]
    probabilities = scorer.predict([first, *others])["category"]
    assert np.isfinite(probabilities).all()
    assert len({tuple(np.round(row, 6)) for row in probabilities}) > 1


def test_batch_order_keeps_scores(scorer, tickets):
    shuffled = list(range(len(tickets)))
    random.Random(1).shuffle(shuffled)
    in_order = scorer.predict(tickets)
    reordered = scorer.predict([tickets[i] for i in shuffled])
    for name, values in in_order.items():
        np.testing.assert_allclose(
            reordered[name], values[shuffled], rtol=0, atol=1e-7, err_msg=name
        )


def test_batch_scores_match_single_scores(scorer, tickets):
    batch = scorer.predict(tickets[:8])["category"]
    single = np.vstack([scorer.predict([t])["category"] for t in tickets[:8]])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-7)


def test_confident_answers_mostly_right(scorer, ict_trained):
    """Tickets answered without review on the evaluation rows are right most of the time."""
    metrics = ict_trained.metrics["category"]
    assert metrics["coverage_at_0.80"] > 0.05, metrics
    assert metrics["precision_at_0.80"] >= 0.6, metrics
    assert metrics["coverage_at_0.95"] <= metrics["coverage_at_0.80"]


def test_closure_model_reads_closure_notes(scorer, ict_path, ict_mapping):
    frame = load_tickets(ict_path, ict_mapping).tickets
    closed = frame[frame["closure_notes"].fillna("") != ""].head(20)
    records = closed.to_dict("records")
    stripped = [dict(r, closure_notes="") for r in records]
    full = scorer.predict(records, modes=("closure",))["category_closure"]
    empty = scorer.predict(stripped, modes=("closure",))["category_closure"]
    assert np.abs(full - empty).max() > 0.05
    assert "category_closure" not in scorer.score(records[:1])[0]["targets"]


def test_scores_ignore_ticket_id(scorer, tickets):
    renamed = [dict(t, ticket_id=f"X-{i}") for i, t in enumerate(tickets)]
    np.testing.assert_allclose(
        scorer.predict(renamed)["category"], scorer.predict(tickets)["category"]
    )


def test_intake_records_are_real_tickets(tickets):
    assert len(tickets) == 60
    assert pd.Series([t["description"] for t in tickets]).str.len().min() > 10
