"""ONNX graphs against the fitted pipelines they came from, on hard texts."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features.inputs import feature_frame
from models.bundle import BundleError, read_manifest
from models.scorer import Scorer

HARD_TEXTS = {
    "chinese": "数据库表空间满，业务系统无法写入",
    "mixed": "Oracle RAC节点宕机，ERP报ORA-12541错误，VPN正常",
    "full_width": "ＥＲＰ系统１２月３日１０：３０无法登录，错误码５００",
    "emoji": "系统又挂了😡🔥，用户全部无法访问🙏",
    "whitespace": " \t\n　 ",
    "empty": "",
}


@pytest.fixture(scope="module")
def hard_tickets(demo_trained):
    base = {
        "ticket_id": "x",
        "created_at": pd.Timestamp("2025-06-15 10:00"),
        "title": "",
        "department": "客户服务部",
        "channel": "电话",
        "system": "CRM",
    }
    return [dict(base, ticket_id=name, description=text) for name, text in HARD_TEXTS.items()]


def test_onnx_matches_fitted_models_on_hard_texts(demo_trained, demo_bundle, hard_tickets):
    scorer = Scorer(demo_bundle)
    onnx = scorer.predict(hard_tickets)
    frame = feature_frame(pd.DataFrame(hard_tickets), demo_trained.spec)
    for name, model in demo_trained.models.items():
        expected = model.predict_scores(frame)
        actual = onnx[name]
        if model.kind == "regression":
            np.testing.assert_allclose(actual, expected, rtol=1e-4, err_msg=name)
            continue
        assert np.abs(actual - expected).max() <= 1e-4, name
        assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all(), name
        np.testing.assert_allclose(actual.sum(axis=1), 1.0, atol=1e-5)


def test_training_logged_parity_within_tolerance(demo_trained):
    for name, value in demo_trained.parity.items():
        assert value <= 1e-4, name


def test_tampered_bundle_rejected(demo_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(demo_bundle, tmp_path / "bundle")
    graph = next((copy / "targets").glob("*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="changed after export"):
        read_manifest(copy)


def test_serving_path_imports_no_sklearn_or_lightgbm(demo_bundle):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from serving.app import create_app\n"
        "from serving.settings import Settings\n"
        f"app = create_app(Settings(bundle_dir={str(demo_bundle)!r}))\n"
        "with TestClient(app) as client:\n"
        "    r = client.post('/v1/score', json={'description': '数据库宕机'})\n"
        "    assert r.status_code == 200, r.text\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'lightgbm'))\n"
        "print('LOADED', bad)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout


def test_joined_intake_graph_matches_each_target_graph(demo_bundle, demo_csv):
    """One onnxruntime call on the joined graph, in parts of RUN_ROWS, equals each graph alone."""
    from features.inputs import ticket_feeds
    from models.scorer import RUN_ROWS

    scorer = Scorer(demo_bundle)
    assert scorer._intake_session is not None
    tickets = pd.read_csv(demo_csv, nrows=2 * RUN_ROWS + 7).to_dict("records")
    for ticket in tickets:
        ticket["created_at"] = pd.Timestamp(ticket["created_at"])
    feeds = ticket_feeds(tickets, scorer.spec)
    joined = scorer.predict_feeds(feeds)
    intake = [t for t in scorer.targets if t.mode == "intake"]
    assert sorted(joined) == sorted(t.name for t in intake)
    for entry in intake:
        session = scorer.sessions[entry.name]
        names = [i.name for i in session.get_inputs()]
        outputs = session.run(None, {n: feeds[n] for n in names})
        alone = Scorer._outputs(entry, outputs)
        np.testing.assert_allclose(joined[entry.name], alone, rtol=0, atol=1e-6, err_msg=entry.name)
    single = scorer.predict(tickets[:1], modes=("intake",))
    for name, values in single.items():
        np.testing.assert_allclose(values, joined[name][:1], atol=1e-6, err_msg=name)


def test_folder_with_two_bundles_is_rejected(demo_bundle, tmp_path):
    import shutil

    from models.bundle import find_bundle

    one = shutil.copytree(demo_bundle, tmp_path / "a" / "bundle")
    assert find_bundle(tmp_path) == one
    shutil.copytree(demo_bundle, tmp_path / "b" / "bundle")
    with pytest.raises(BundleError, match="contains 2 bundles"):
        find_bundle(tmp_path)
