"""``triage audit``: coded causes that a confident closure-mode model disagrees with."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from training.audit import AUDIT_COLUMNS, audit, closed_tickets
from training.cli import main
from training.demo_data import write_demo_data

FLIPPED = 16


def _flip_categories(source, destination, seed=0):
    """Write a copy of ``source`` with FLIPPED closed tickets coded as the wrong category."""
    tickets = pd.read_csv(source)
    rng = np.random.default_rng(seed)
    rows = rng.choice(
        np.flatnonzero(tickets["closure_notes"].notna()), FLIPPED, replace=False
    )
    categories = sorted(tickets["category"].dropna().unique())
    tickets.loc[rows, "category"] = [
        categories[(categories.index(c) + 1) % len(categories)]
        for c in tickets.loc[rows, "category"]
    ]
    tickets.to_csv(destination, index=False)
    return set(tickets.loc[rows, "ticket_id"].astype(str))


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    source = write_demo_data(420, folder / "tickets.csv", seed=5)
    path = folder / "flipped.csv"
    return path, _flip_categories(source, path)


@pytest.fixture(scope="module")
def cross_fitted(flipped, tmp_path_factory):
    path, _ = flipped
    out = tmp_path_factory.mktemp("audit-out") / "audit.csv"
    return audit(path, None, out=out, folds=3), out


def test_audit_finds_flipped_codes(flipped, cross_fitted):
    _, wrong = flipped
    result, _ = cross_fitted
    found = set(result.flagged["ticket_id"].astype(str))
    assert len(found & wrong) >= FLIPPED // 3
    assert len(found & wrong) >= 0.7 * len(found)


def test_audit_rows_disagree_confidently(cross_fitted):
    result, _ = cross_fitted
    flagged = result.flagged
    assert len(flagged) > 0
    assert (flagged["coded"] != flagged["predicted"]).all()
    assert (flagged["probability"] >= flagged["threshold"]).all()
    assert (flagged["probability"] > flagged["coded_probability"]).all()
    assert flagged["probability"].is_monotonic_decreasing


def test_audit_checks_closed_labelled_tickets(flipped, cross_fitted):
    path, _ = flipped
    result, _ = cross_fitted
    tickets = pd.read_csv(path)
    assert result.checked == int(tickets["category"].notna().sum())
    assert result.source == "cross-fitted closure models, 3 folds"


def test_audit_csv_has_both_labels(cross_fitted):
    result, out = cross_fitted
    written = pd.read_csv(out, encoding="utf-8-sig")
    assert list(written.columns) == AUDIT_COLUMNS
    assert len(written) == len(result.flagged)
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_min_probability_overrides_thresholds(flipped, tmp_path):
    path, _ = flipped
    strict = audit(path, None, folds=3, min_probability=0.99)
    assert (strict.flagged["probability"] >= 0.99).all()
    assert (strict.flagged["threshold"] == 0.99).all()


def test_closed_tickets_need_close_time_or_notes():
    tickets = pd.DataFrame(
        {
            "closed_at": [pd.Timestamp("2025-01-01"), pd.NaT, pd.NaT],
            "closure_notes": ["", "已重启", None],
        }
    )
    assert closed_tickets(tickets).tolist() == [True, True, False]


def test_audit_rejects_binary_target(flipped):
    path, _ = flipped
    with pytest.raises(ValueError, match="escalation is binary"):
        audit(path, None, target="escalation")


def test_audit_with_bundle_closure_model(demo_csv, demo_bundle, tmp_path):
    """The bundle's closure model was trained on the true codes, so it spots the flipped ones."""
    path = tmp_path / "flipped.csv"
    wrong = _flip_categories(demo_csv, path, seed=1)
    result = audit(path, None, model_uri=str(demo_bundle), out=tmp_path / "audit.csv")
    assert result.source.startswith("closure model of")
    found = set(result.flagged["ticket_id"].astype(str))
    assert len(found & wrong) >= FLIPPED // 2
    assert (result.flagged["coded"] != result.flagged["predicted"]).all()


def test_audit_bundle_without_closure_model(demo_csv, demo_bundle, tmp_path):
    copy = shutil.copytree(demo_bundle, tmp_path / "bundle")
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["targets"] = [t for t in manifest["targets"] if t.get("mode") != "closure"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="no closure-mode model for target category"):
        audit(demo_csv, None, model_uri=str(copy))


def test_audit_command_writes_csv(flipped, tmp_path):
    path, _ = flipped
    out = tmp_path / "audit.csv"
    result = CliRunner().invoke(
        main, ["audit", "--data", str(path), "--out", str(out), "--cv", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "closed tickets checked" in result.output
    assert out.is_file()


def test_audit_command_reports_unknown_target(flipped, tmp_path):
    path, _ = flipped
    result = CliRunner().invoke(
        main,
        [
            "audit",
            "--data",
            str(path),
            "--out",
            str(tmp_path / "a.csv"),
            "--target",
            "x",
        ],
    )
    assert result.exit_code != 0
    assert "target 'x' is not declared" in result.output
