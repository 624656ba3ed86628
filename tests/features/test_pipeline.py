"""The word vectoriser's vocabulary cut and its ONNX export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import StringTensorType

import models.export  # noqa: F401  (registers the WordVectorizer converter)
from features.pipeline import TOKEN_PATTERN, WordVectorizer, most_frequent
from models.export import STRING_LOCALE

WORDS = ["国网", "中兴公司", "财务", "系统", "无法", "登录", "数据库", "超时", "ERP", "端口"]


def corpus(seed: int, rows: int = 60) -> list[str]:
    """Tickets built from a few repeated phrases, so many n-grams tie at the cut."""
    rng = np.random.default_rng(seed)
    phrases = [" ".join(rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(8)]
    return [" ".join(rng.choice(phrases, size=rng.integers(1, 4))) for _ in range(rows)]


def vectorizer(limit: int) -> WordVectorizer:
    return WordVectorizer(
        token_pattern=TOKEN_PATTERN,
        lowercase=False,
        ngram_range=(1, 3),
        min_df=1,
        max_features=limit,
        binary=True,
        dtype=np.float32,
    )


def test_ties_go_to_fewer_words_then_earlier_terms():
    terms = ["a b", "a", "b", "a b c", "c"]
    counts = np.array([5, 5, 5, 5, 9])
    assert list(most_frequent(terms, counts, 3)) == [1, 2, 4]
    assert list(most_frequent(terms, counts, 4)) == [0, 1, 2, 4]


@pytest.mark.parametrize("seed", range(12))
def test_every_kept_ngram_keeps_its_words(seed):
    fitted = vectorizer(limit=15).fit(corpus(seed))
    vocabulary = fitted.vocabulary_
    assert len(vocabulary) <= 15
    assert sorted(vocabulary.values()) == list(range(len(vocabulary)))
    for term in vocabulary:
        for word in term.split(" "):
            assert word in vocabulary, (term, sorted(vocabulary))


@pytest.mark.parametrize("seed", range(12))
def test_onnx_counts_match_scikit_learn(seed):
    texts = corpus(seed)
    fitted = vectorizer(limit=15).fit(texts)
    graph = convert_sklearn(
        fitted,
        initial_types=[("tokens", StringTensorType([None, 1]))],
        options={id(fitted): {"separators": [" "], "locale": STRING_LOCALE}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = texts + corpus(seed + 100, rows=20)
    [actual] = session.run(None, {"tokens": np.array(probe, dtype=object).reshape(-1, 1)})
    np.testing.assert_array_equal(actual, fitted.transform(probe).toarray())


def test_cut_matches_the_dask_engine_selection():
    from collections import Counter

    from training.dask_engine import select_vocabulary

    texts = corpus(3, rows=80)
    fitted = vectorizer(limit=20).fit(texts)
    analyse = fitted.build_analyzer()
    documents = Counter()
    for text in texts:
        documents.update(set(analyse(text)))
    assert select_vocabulary(documents, Counter(), len(texts), fitted) == fitted.vocabulary_
