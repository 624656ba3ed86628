"""Root-cause recommendation: the combination rule, scorer answers and recall."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.mapping import load_mapping
from models.bundle import MANIFEST, write_manifest
from models.recommend import (
    check_include,
    combine,
    model_label,
    neighbour_support,
)
from models.scorer import Scorer
from models.similar import INDEX_FILES, SimilarTicket

LABELS = ["a", "b", "c", "其他"]


def neighbour(
    cause: str | None, similarity: float, ticket_id: str = "n"
) -> SimilarTicket:
    return SimilarTicket(
        ticket_id, similarity, "", cause, None, "", None, None, None, None
    )


def codes(ranked) -> list[str]:
    return [c.code for c in ranked]


def test_combine_without_neighbours_keeps_model_order():
    ranked = combine(np.array([0.2, 0.5, 0.25, 0.05]), LABELS, {})
    assert codes(ranked) == ["b", "c", "a", "其他"]
    assert sum(c.score for c in ranked) == pytest.approx(1.0)


def test_close_neighbours_lift_the_second_cause():
    ranked = combine(np.array([0.5, 0.4, 0.05, 0.05]), LABELS, {"b": 0.9})
    assert codes(ranked)[:2] == ["b", "a"]
    assert ranked[0].probability == pytest.approx(0.4)
    assert ranked[0].neighbour_support == pytest.approx(0.9)


def test_weak_neighbours_leave_model_order():
    ranked = combine(np.array([0.5, 0.3, 0.15, 0.05]), LABELS, {"c": 0.02})
    assert codes(ranked)[:3] == ["a", "b", "c"]


def test_one_neighbour_cannot_lift_implausible_cause():
    ranked = combine(np.array([0.9, 0.08, 0.0, 0.02]), LABELS, {"c": 0.1})
    assert codes(ranked)[0] == "a"


def test_neighbour_cause_unknown_to_model_becomes_candidate():
    ranked = combine(np.array([0.6, 0.3, 0.05, 0.05]), LABELS, {"new": 0.95})
    assert "new" in codes(ranked)
    new = next(c for c in ranked if c.code == "new")
    assert new.probability == 0.0


def test_combine_rejects_weight_outside_unit_interval():
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):
        combine(np.array([1.0, 0, 0, 0]), LABELS, {}, weight=1.5)


def test_rare_cause_falls_under_rare_label():
    labels = set(LABELS)
    assert model_label("a", labels, "其他") == "a"
    assert model_label("gfs文件设计不合理", labels, "其他") == "其他"
    assert model_label("gfs文件设计不合理", {"a"}, "其他") == "gfs文件设计不合理"
    assert model_label(None, labels, "其他") is None


def test_support_divides_by_all_neighbours():
    support = neighbour_support(
        [
            neighbour("a", 0.9),
            neighbour("a", 0.5),
            neighbour(None, 0.8),
            neighbour("zzz", 0.4),
        ],
        set(LABELS),
        "其他",
    )
    assert support == pytest.approx({"a": 1.4 / 4, "其他": 0.4 / 4})


def test_unknown_include_is_rejected():
    with pytest.raises(ValueError, match=r"unknown include option\(s\) \['evidence'\]"):
        check_include(["similar", "evidence"])


# Scorer answers on the demo bundle ----------------------------------------------


@pytest.fixture(scope="module")
def demo_tickets(demo_csv) -> pd.DataFrame:
    return pd.read_csv(demo_csv, parse_dates=["created_at", "closed_at"])


@pytest.fixture(scope="module")
def scorer(demo_bundle) -> Scorer:
    return Scorer(demo_bundle)


def copied_ticket(demo_tickets: pd.DataFrame, position: int) -> tuple[dict, dict]:
    original = demo_tickets.iloc[position].to_dict()
    copy = {
        "ticket_id": "COPY-1",
        "created_at": original["closed_at"] + pd.Timedelta(days=4),
        "title": original["title"],
        "description": original["description"],
        "department": original["department"],
        "channel": original["channel"],
        "system": original["system"],
    }
    return original, copy


def test_copied_ticket_finds_original_and_recurs(scorer, demo_tickets):
    original, copy = copied_ticket(demo_tickets, 300)
    [answer] = scorer.score([copy], include=("similar",))
    assert answer["similar"][0]["ticket_id"] == original["ticket_id"]
    assert answer["similar"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert answer["possible_recurrence"]["ticket_id"] == original["ticket_id"]
    assert answer["possible_recurrence"]["days_since_closed"] == pytest.approx(
        4.0, abs=1e-3
    )


def test_recommended_causes_carry_measures_and_evidence(scorer, demo_tickets):
    _, copy = copied_ticket(demo_tickets, 300)
    [answer] = scorer.score([copy], include=("similar",))
    causes = answer["root_causes"]
    assert len(causes) == 3
    scores = [c["score"] for c in causes]
    assert scores == sorted(scores, reverse=True)
    for cause in causes:
        assert cause["measures"], cause["code"]
        for ticket in cause["evidence"]:
            assert ticket["root_cause"] == cause["code"]
    evidence = [t["ticket_id"] for c in causes for t in c["evidence"]]
    assert len(evidence) == len(set(evidence))


def test_answer_without_include_is_unchanged(scorer, demo_tickets):
    _, copy = copied_ticket(demo_tickets, 300)
    [plain] = scorer.score([copy])
    assert "similar" not in plain
    assert "reasons" not in plain
    assert "possible_recurrence" not in plain
    model_top = [c["code"] for c in plain["targets"]["root_cause"]["top"]]
    assert [c["code"] for c in plain["root_causes"]] == model_top


@pytest.fixture
def bundle_without_index(demo_bundle, tmp_path) -> Path:
    """The demo bundle as a release without the similar-ticket index wrote it."""
    folder = Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))
    for name in INDEX_FILES:
        (folder / name).unlink()
    (folder / "similar").rmdir()
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest.pop("similar")
    manifest.pop("files")
    write_manifest(folder, manifest)
    return folder


def test_bundle_without_index_still_serves(bundle_without_index, demo_tickets):
    scorer = Scorer(bundle_without_index)
    assert scorer.similar is None
    _, copy = copied_ticket(demo_tickets, 300)
    [plain] = scorer.score([copy])
    [asked] = scorer.score([copy], include=("similar", "reasons"))
    assert "similar" not in asked
    assert "possible_recurrence" not in asked
    assert asked["root_causes"] == plain["root_causes"]
    assert asked["reasons"]["code"] == plain["category"]["code"]


def test_batch_answers_follow_input_order(scorer, demo_tickets):
    tickets = [copied_ticket(demo_tickets, p)[1] for p in (10, 500, 900)]
    tickets = [dict(t, ticket_id=f"COPY-{i}") for i, t in enumerate(tickets)]
    answers = scorer.score(tickets, include=("similar", "reasons"))
    for position, answer in zip((10, 500, 900), answers):
        assert (
            answer["similar"][0]["ticket_id"]
            == demo_tickets.iloc[position]["ticket_id"]
        )
        assert answer["reasons"]["code"] == answer["category"]["code"]


# Recall ---------------------------------------------------------------------------


def test_recommender_recall_on_demo_tickets():
    from training.demo_data import generate_tickets
    from training.recommend_eval import recommender_recall

    tickets = generate_tickets(700, seed=3)
    figures = recommender_recall(
        tickets.iloc[:550],
        tickets.iloc[550:],
        load_mapping(),
        params={"n_estimators": 15},
        n_jobs=1,
    )
    assert figures["rows"] == 150
    for system in ("model", "neighbours", "combined"):
        assert 0 <= figures[system]["recall@1"] <= figures[system]["recall@3"] <= 1, (
            system
        )
    # Eleven causes: three guesses at random find the truth about 27% of the time.
    assert figures["neighbours"]["recall@3"] > 0.4
    assert figures["combined"]["recall@3"] > 0.4


def test_recommender_recall_needs_root_cause_target():
    from dataclasses import replace

    from training.recommend_eval import recommender_recall

    mapping = load_mapping()
    without = replace(mapping, targets={"category": mapping.targets["category"]})
    with pytest.raises(ValueError, match="declares no root_cause target"):
        recommender_recall(pd.DataFrame(), pd.DataFrame(), without)


def test_recommender_recall_fits_weighted_model(monkeypatch):
    """The recall figures must score the class-weighted model that triage train fits."""
    from models.estimators import DEFAULT_CLASS_WEIGHT
    from training import recommend_eval
    from training.demo_data import generate_tickets

    calls = []
    real_fit = recommend_eval.fit_calibrated

    def recording_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(recommend_eval, "fit_calibrated", recording_fit)
    tickets = generate_tickets(300, seed=4)
    recommend_eval.recommender_recall(
        tickets.iloc[:240],
        tickets.iloc[240:],
        load_mapping(),
        params={"n_estimators": 10},
        n_jobs=1,
    )
    assert len(calls) == 1
    assert calls[0].get("class_weight") == DEFAULT_CLASS_WEIGHT


def test_scorer_without_index_rejects_similar(demo_bundle):
    plain = Scorer(demo_bundle, load_similar=False)
    ticket = {"description": "数据库连接超时，业务系统无法登录"}
    assert plain.similar is None
    assert plain.score([ticket])[0]["category"]["code"]
    with pytest.raises(ValueError, match="without its similar-ticket index"):
        plain.score([ticket], include=["similar"])
