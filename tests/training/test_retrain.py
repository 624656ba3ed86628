"""Monthly retraining on the real ICT records, end to end.

The records are split by month into exports that grow one month at a time:
an initial model on tickets up to 2016-05, then three monthly retrains
(2016-06, 2016-07, 2016-08). A challenger trained on shuffled labels must be
rejected, a rerun of a month must register nothing, a dry run must move
nothing, and a rollback must reach a running server without a restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from features.loading import load_tickets, read_export
from features.mapping import load_mapping
from features.schema import SOURCE_LINE
from models.scorer import load_scorer
from training.cli import main
from training.gate import GateConfig, TargetComparison, apply_gate
from training.registry import CHAMPION, PREVIOUS, alias_version
from training.retrain import compare_models

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "ict-monthly"
CREATED = "故障开始时间"
# Fewer, larger boosting steps than the product's default keep each training
# short while the models still learn enough to tell real from shuffled labels.
# One LightGBM thread: on a busy machine its OpenMP threads wait for each other
# and a fit of a few hundred tickets slows down by one to two orders of magnitude.
FAST_PARAMS = ("--param", "n_estimators=40", "--param", "learning_rate=0.3", "--jobs", "1")
WINDOW = "6"
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Step:
    """One ``triage retrain`` invocation and the registry right after it."""

    name: str
    exit_code: int
    output: str
    run_id: str | None
    champion: str | None
    previous: str | None
    versions: int


def write_exports(folder: Path, mapping_path: Path, ict_path: Path) -> dict[str, Path]:
    """Write the growing exports, and one whose training months have shuffled labels."""
    raw = read_export(ict_path).drop(columns=[SOURCE_LINE])
    months = pd.to_datetime(raw[CREATED].replace("", None), errors="coerce", format="mixed")
    months = months.dt.to_period("M")
    files = {}
    for month in ("2016-05", "2016-06", "2016-07", "2016-08", "2016-09"):
        files[month] = folder / f"ict_until_{month}.csv"
        raw[months <= month].to_csv(files[month], index=False)

    shuffled = raw[months <= "2016-08"].copy()
    window = (months[months <= "2016-08"] < "2016-08").to_numpy()
    rng = np.random.default_rng(7)
    order = rng.permutation(np.flatnonzero(window))
    for target in load_mapping(mapping_path).targets.values():
        column = shuffled.columns.get_loc(target.column)
        shuffled.iloc[np.flatnonzero(window), column] = shuffled.iloc[order, column].to_numpy()
    files["shuffled"] = folder / "ict_until_2016-08_shuffled.csv"
    shuffled.to_csv(files["shuffled"], index=False)
    return files


def retrain_args(
    data: Path, mapping: Path, *extra: str, params=FAST_PARAMS, window: str = WINDOW
) -> list[str]:
    return [
        "retrain", "--data", str(data), "--mapping", str(mapping), "--model-name", MODEL,
        "--window-months", window, *params, *extra,
    ]


def registry_state(client: MlflowClient) -> tuple[str | None, str | None, int]:
    versions = client.search_model_versions(f"name = '{MODEL}'")
    return (
        alias_version(client, MODEL, CHAMPION),
        alias_version(client, MODEL, PREVIOUS),
        len(versions),
    )


def run_step(name: str, args: list[str], client: MlflowClient) -> Step:
    result = CliRunner().invoke(main, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    found = re.search(r"; run ([0-9a-f]{32})", result.output)
    champion, previous, versions = registry_state(client)
    return Step(
        name, result.exit_code, result.output, found.group(1) if found else None,
        champion, previous, versions,
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory, tracking_dir, ict_path, ict_mapping) -> dict[str, Step]:
    """Run the whole year's sequence once; tests read what each step left behind."""
    folder = tmp_path_factory.mktemp("exports")
    files = write_exports(folder, ict_mapping, ict_path)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    steps = {}
    for month in ("2016-05", "2016-06", "2016-07", "2016-08"):
        steps[month] = run_step(month, retrain_args(files[month], ict_mapping), client)
        assert steps[month].exit_code == 0, steps[month].output
    steps["rerun"] = run_step("rerun", retrain_args(files["2016-07"], ict_mapping), client)
    steps["shuffled"] = run_step(
        "shuffled",
        retrain_args(files["shuffled"], ict_mapping, "--force", "--fail-on-reject"),
        client,
    )
    # The dry run only has to leave the registry alone, so a tiny model does. It
    # evaluates 2016-08 of an export that runs to 2016-09, so that month is left out.
    steps["dry run"] = run_step(
        "dry run",
        retrain_args(
            files["2016-09"], ict_mapping, "--dry-run", "--month", "2016-08",
            params=("--param", "n_estimators=5", "--jobs", "1"),
        ),
        client,
    )
    # Gate limits no challenger can fail, so the promotion path runs as well.
    steps["loose gate"] = run_step(
        "loose gate",
        retrain_args(
            files["2016-09"], ict_mapping, "--max-f1-drop", "1", "--max-recall-drop", "1",
            "--max-calibration-rise", "1", window="7",
        ),
        client,
    )
    steps["files"] = files
    return steps


@pytest.fixture(scope="module")
def client(history) -> MlflowClient:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


def run_of(client: MlflowClient, step: Step):
    assert step.run_id, step.output
    return client.get_run(step.run_id)


def logged_comparisons(client: MlflowClient, run_id: str) -> list[TargetComparison]:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="comparison.json")
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        TargetComparison(
            r["target"], r["kind"], r["rows"], r["unscored_rows"], r["champion"], r["challenger"]
        )
        for r in rows
    ]


def logged_gate(run_id: str) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="gate.json")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def challenger_parity(client: MlflowClient, version: str) -> dict[str, float]:
    """The parity figures the challenger's training run logged, per target."""
    run = client.get_run(client.get_model_version(MODEL, version).run_id)
    suffix = ".parity_max_abs_diff"
    return {k[: -len(suffix)]: v for k, v in run.data.metrics.items() if k.endswith(suffix)}


def test_initial_model_becomes_champion(history, client):
    step = history["2016-05"]
    assert "version 1 is the first version and now the champion" in step.output
    assert (step.champion, step.previous, step.versions) == ("1", None, 1)
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["data_month"] == "2016-05"
    assert tags["data_window"] == "2015-11..2016-04"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["data_sha256"])
    assert tags["gate.status"] == "first version"


def test_monthly_retrains_follow_logged_gate(history, client):
    champion = "1"
    for number, month in enumerate(("2016-06", "2016-07", "2016-08"), start=2):
        step = history[month]
        version = str(number)
        run = run_of(client, step)
        tags = run.data.tags
        comparisons = logged_comparisons(client, step.run_id)
        champion_only = logged_gate(step.run_id)["champion_only"]
        decision = apply_gate(
            comparisons, challenger_parity(client, version), GateConfig(), champion_only
        )

        assert tags["data_month"] == month
        assert tags["champion_version"] == champion
        assert tags["gate.decision"] == ("passed" if decision.passed else "rejected")
        assert tags["gate.reasons"] == ("; ".join(decision.reasons) or "none")
        assert step.versions == number
        if decision.passed:
            assert f"version {version} is now the champion" in step.output
            assert (step.champion, step.previous) == (version, champion)
            champion = version
        else:
            assert "gate rejected the challenger" in step.output
            for reason in decision.reasons:
                assert f"  - {reason}" in step.output
            assert step.champion == champion
        version_tags = client.get_model_version(MODEL, version).tags
        assert version_tags["gate.decision"] == tags["gate.decision"]
        assert version_tags["retrain_run_id"] == step.run_id


def test_comparison_run_has_metrics_and_plots(history, client):
    step = history["2016-07"]
    run = run_of(client, step)
    metrics = run.data.metrics
    for role in ("champion", "challenger", "delta"):
        assert f"{role}.category.macro_f1" in metrics
        assert f"{role}.category.ece" in metrics
    assert any(k.startswith("delta.category.recall.") for k in metrics)
    assert "drift.psi.department" in metrics
    assert "drift.psi.tokens" in metrics
    names = {a.path for a in client.list_artifacts(step.run_id)}
    assert {"comparison.json", "gate.json", "model_card.md", "plots", "drift"} <= names
    plots = {a.path for a in client.list_artifacts(step.run_id, "plots")}
    assert plots == {"plots/comparison.png"}
    drift = {a.path for a in client.list_artifacts(step.run_id, "drift")}
    assert {"drift/drift.html", "drift/drift.json", "drift/drift_psi.png"} <= drift
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{step.run_id}'"
    )
    assert [c.info.run_name for c in children] == ["train ict_until_2016-07.csv"]


def test_both_models_scored_on_unseen_month(history, client, ict_mapping):
    """The logged comparison matches both registered graphs rescored on the month."""
    step = history["2016-07"]
    comparisons = {c.target: c for c in logged_comparisons(client, step.run_id)}
    champion_version = run_of(client, step).data.tags["champion_version"]
    load = load_tickets(history["files"]["2016-07"], ict_mapping)
    month = load.tickets[load.tickets["created_at"].dt.to_period("M") == "2016-07"]
    month = month.reset_index(drop=True)
    champion = load_scorer(f"models:/{MODEL}/{champion_version}")
    challenger = load_scorer(f"models:/{MODEL}/3")
    again = {c.target: c for c in compare_models(champion, challenger, month, load.mapping)}
    for name in ("category", "root_cause", "priority"):
        assert again[name].rows == comparisons[name].rows
        for role in ("champion", "challenger"):
            logged = getattr(comparisons[name], role)
            assert getattr(again[name], role)["macro_f1"] == pytest.approx(logged["macro_f1"])
    # Training evaluated on the same month: every labelled month ticket whose
    # label is in the challenger's label set, after unknown labels became "other".
    labels = set(challenger.target("category").labels)
    merged = [v if v in labels else "other" for v in month["category"].dropna()]
    train_run = client.get_run(client.get_model_version(MODEL, "3").run_id)
    assert train_run.data.metrics["category.rows"] == sum(v in labels for v in merged)
    window_rows = len(load.tickets) - len(month)
    assert train_run.data.metrics["category.train_rows"] <= window_rows


def test_model_card_per_version(history, client):
    for version in ("1", "2", "3", "4"):
        model_version = client.get_model_version(MODEL, version)
        card = model_version.description
        assert card.startswith(f"# Model card: {MODEL} version {version}\n")
        for heading in (
            "## Rows per class in the training window",
            "## Thresholds",
            "## What changed against the previous champion",
            "## Known limits",
        ):
            assert heading in card
        month = model_version.tags["data_month"]
        assert f"## Metrics per class on {month}" in card
        path = mlflow.artifacts.download_artifacts(
            run_id=model_version.run_id, artifact_path="model_card.md"
        )
        assert Path(path).read_text(encoding="utf-8") == card


def test_rerun_of_month_registers_nothing(history):
    step = history["rerun"]
    before = history["2016-08"]
    assert step.exit_code == 0
    assert "month 2016-07 already has version 3; nothing registered" in step.output
    assert step.versions == before.versions
    assert (step.champion, step.previous) == (before.champion, before.previous)


def test_shuffled_labels_are_rejected(history, client):
    step = history["shuffled"]
    before = history["rerun"]
    assert step.exit_code == 1, step.output
    assert "gate rejected the challenger (version 5 stays challenger)" in step.output
    assert step.versions == before.versions + 1
    assert (step.champion, step.previous) == (before.champion, before.previous)
    reasons = logged_gate(step.run_id)["reasons"]
    assert any(re.search(r"macro-F1 fell|recall of class \S+ fell", r) for r in reasons), reasons
    assert run_of(client, step).data.tags["gate.reasons"] == "; ".join(reasons)
    for reason in reasons:
        assert f"  - {reason}" in step.output
    tags = client.get_model_version(MODEL, "5").tags
    assert tags["gate.decision"] == "rejected"
    assert tags["data_month"] == "2016-08"


def test_dry_run_moves_nothing(history, client):
    step = history["dry run"]
    before = history["shuffled"]
    assert step.exit_code == 0, step.output
    assert "dry run, the gate would" in step.output
    assert "nothing registered" in step.output
    assert step.versions == before.versions
    assert (step.champion, step.previous) == (before.champion, before.previous)
    run = run_of(client, step)
    assert run.data.tags["dry_run"] == "true"
    assert run.data.tags["gate.status"] == "dry run"
    assert run.data.tags["data_month"] == "2016-08"
    shuffled_run = run_of(client, history["shuffled"])
    assert run.data.metrics["month_rows"] == shuffled_run.data.metrics["month_rows"]
    assert run.data.metrics["rows"] == shuffled_run.data.metrics["rows"]


def test_passing_gate_promotes(history, client):
    step = history["loose gate"]
    before = history["dry run"]
    assert step.exit_code == 0, step.output
    assert (
        f"gate passed; version 6 is now the champion, version {before.champion} is previous"
        in step.output
    )
    assert (step.champion, step.previous) == ("6", before.champion)
    tags = client.get_model_version(MODEL, "6").tags
    assert tags["gate.decision"] == "passed"
    assert tags["champion.action"] == "retrain 2016-09: gate passed"
    assert tags["replaced_version"] == before.champion
    assert tags["data_window"] == "2016-02..2016-08"


# Running processes ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A server started in its own process group, stopped by its process id."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_for(self, url: str, check, timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(url, timeout=5)
                if check(response):
                    return response
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{url} not as expected after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def served_version(response: httpx.Response) -> str | None:
    body = response.json()
    return (body.get("model") or {}).get("version")


def test_rollback_reaches_running_server(history, client, tmp_path):
    runner = CliRunner()
    champion, previous, _ = registry_state(client)
    if previous is None:
        promoted = runner.invoke(main, ["promote", "4", "--model-name", MODEL])
        assert promoted.exit_code == 0, promoted.output
        champion, previous, _ = registry_state(client)
    assert previous is not None

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRIAGE_MODEL_URI": f"models:/{MODEL}@champion",
        "TRIAGE_POLL_SECONDS": "1",
        "TRIAGE_FEEDBACK_DB_URL": f"sqlite:///{tmp_path / 'feedback.db'}",
    }
    server = Process(
        [sys.executable, "-m", "uvicorn", "serving.main:app", "--host", "127.0.0.1",
         "--port", str(port)],
        env, tmp_path / "server.log",
    )
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        first = server.wait_for(ready, lambda r: r.status_code == 200, timeout=240)
        assert served_version(first) == champion
        rolled = runner.invoke(main, ["rollback", "--model-name", MODEL, "--reason", "test"])
        assert rolled.exit_code == 0, rolled.output
        assert f"rolled back from version {champion} to {previous}" in rolled.output
        after = server.wait_for(
            ready, lambda r: r.status_code == 200 and served_version(r) == previous, timeout=120
        )
        assert after.json()["model"]["alias"] == "champion"
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found; install chromium")
def test_mlflow_ui_shows_comparison_run(history, client, tracking_dir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    step = history["2016-08"]
    run = run_of(client, step)
    port = free_port()
    ui = Process(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
         f"sqlite:///{tracking_dir / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        {**os.environ}, tmp_path / "mlflow-ui.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ui.wait_for(f"{base}/health", lambda r: r.status_code == 200, timeout=240)
        png = httpx.get(
            f"{base}/get-artifact",
            params={"path": "plots/comparison.png", "run_uuid": step.run_id},
            timeout=30,
        )
        assert png.status_code == 200
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        png_width = int.from_bytes(png.content[16:20], "big")
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(
                    f"{base}/#/experiments/{run.info.experiment_id}/runs/{step.run_id}/artifacts"
                )
                page.get_by_text("comparison.json").first.wait_for(timeout=60_000)
                title = page.get_by_text("retrain 2016-08").first.is_visible()
                page.get_by_text("plots", exact=True).first.click()
                page.get_by_text("comparison.png").first.wait_for(timeout=30_000)
                page.get_by_text("comparison.png").first.click()
                # The UI fetches the artifact and shows it from a blob: URL.
                page.wait_for_function(
                    "width => [...document.images].some(i => i.naturalWidth === width)",
                    arg=png_width,
                    timeout=60_000,
                )
                page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            finally:
                browser.close()
        assert title
    finally:
        ui.stop()
