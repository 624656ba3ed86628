"""The Dask engine on a two-worker LocalCluster: training and batch scoring."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import load_tickets
from training.dask_engine import select_vocabulary
from training.score_batch import score_batch

# Both engines fit the same number of rounds, few enough to keep the test short.
PARAMS = {"n_estimators": 60}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    # Worker processes, because LightGBM keeps one network per process and
    # two thread workers in one process would share it.
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GiB",
        host="127.0.0.1", dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def core_mapping(tmp_path_factory) -> Path:
    """The canonical mapping with category, root cause and escalation only."""
    from features.mapping import DEFAULT_MAPPING

    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("[targets."):
            name = line[len("[targets.") :].split(".")[0].rstrip("]")
            skipping = name not in ("category", "root_cause", "escalation")
        if not skipping:
            kept.append(line)
    path = tmp_path_factory.mktemp("mapping") / "core.toml"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return path


def test_dask_training_matches_local_macro_f1(cluster, demo_csv, core_mapping, tracking_dir):
    from training.train import train

    local = train(demo_csv, core_mapping, model_name="dask-test-local", params=PARAMS,
                  progress=False, register=False)
    distributed = train(demo_csv, core_mapping, model_name="dask-test", params=PARAMS,
                        progress=False, engine="dask", scheduler=cluster.scheduler_address)
    for name in ("category", "root_cause", "escalation"):
        assert distributed.metrics[name]["rows"] == local.metrics[name]["rows"], name
        assert distributed.metrics[name]["train_rows"] == local.metrics[name]["train_rows"], name
    category_local = local.metrics["category"]["macro_f1"]
    category_dask = distributed.metrics["category"]["macro_f1"]
    assert abs(category_dask - category_local) <= 0.02, (category_dask, category_local)
    assert distributed.metrics["category"]["parity_max_abs_diff"] <= 1e-4
    assert distributed.version is not None
    bundle_targets = sorted(p.name for p in (distributed.bundle_dir / "targets").iterdir())
    assert bundle_targets == ["category.onnx", "escalation.onnx", "root_cause.onnx"]


def test_dask_score_batch_matches_local(cluster, demo_bundle, demo_csv, tmp_path):
    local = tmp_path / "local.parquet"
    remote = tmp_path / "dask.parquet"
    score_batch(demo_csv, local, demo_bundle, chunk_rows=250, workers=1, progress=False)
    summary = score_batch(demo_csv, remote, demo_bundle, chunk_rows=250, engine="dask",
                          scheduler=cluster.scheduler_address, progress=False)
    assert summary.parts == 5
    pd.testing.assert_frame_equal(pd.read_parquet(remote), pd.read_parquet(local))


def test_dask_engine_needs_scheduler(demo_bundle, demo_csv, tmp_path):
    from training.dask_engine import DaskEngineError

    with pytest.raises(DaskEngineError, match="needs a scheduler address"):
        score_batch(demo_csv, tmp_path / "x.parquet", demo_bundle, engine="dask", progress=False)


def test_select_vocabulary_matches_count_vectorizer(demo_csv):
    from sklearn.feature_extraction.text import CountVectorizer

    from features.inputs import FeatureSpec, feature_frame

    tickets = load_tickets(demo_csv).tickets.head(600)
    documents = feature_frame(tickets, FeatureSpec())["tokens"].tolist()
    vectorizer = CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2),
                                 min_df=3, binary=True)
    fitted = CountVectorizer(**vectorizer.get_params()).fit(documents)
    analyse = vectorizer.build_analyzer()
    document_counts, term_counts = Counter(), Counter()
    # Counted in two halves and summed, as partitions are.
    for half in (documents[:300], documents[300:]):
        for text in half:
            found = analyse(text)
            term_counts.update(found)
            document_counts.update(set(found))
    vocabulary = select_vocabulary(document_counts, term_counts, len(documents), vectorizer)
    assert vocabulary == fitted.vocabulary_
    assert len(vocabulary) > 100


def test_select_vocabulary_keeps_most_frequent_terms():
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(min_df=1, max_features=2, binary=True)
    documents = Counter({"a": 5, "b": 1, "c": 4, "d": 4})
    vocabulary = select_vocabulary(documents, documents, 6, vectorizer)
    # c and d tie at 4; the earlier term wins.
    assert vocabulary == {"a": 0, "c": 1}
    assert np.all(np.diff(list(vocabulary.values())) > 0)
