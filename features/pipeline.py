"""The scikit-learn feature pipeline: bags of jieba tokens and characters, metadata encoders.

Every output column is a count or a 0/1 indicator, so float32 (ONNX) and
float64 (LightGBM) see the same values and tree splits cannot flip between the
fitted model and its ONNX export.
"""

from __future__ import annotations

import numbers
from collections import Counter
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import OneHotEncoder

from .inputs import MISSING, TOKENS, FeatureSpec

# Tokens are separated by single spaces; the explicit pattern keeps Chinese tokens,
# which the ONNX converter's default ASCII-only pattern would drop.
TOKEN_PATTERN = r"\S+"

# Character n-grams are read from the same token string as the words, one
# non-ASCII character per "token", so they cover the Chinese text only (Latin
# words, numbers and placeholders stay in the word bag). scikit-learn and the
# ONNX Tokenizer (RE2) read this pattern alike; skl2onnx converts only
# analyzer="word", which is why the characters are matched as single-character
# words instead of with analyzer="char".
CHARACTER_PATTERN = r"[^\x00-\x7f]"
CHARACTERS = "characters"
# Metadata values seen fewer times than this in training share the rare bucket.
MIN_CATEGORY_COUNT = 4


def most_frequent(terms: list[str], counts: np.ndarray, limit: int) -> np.ndarray:
    """Positions of the ``limit`` most frequent of ``terms``, in their original order.

    A tie goes to the n-gram of fewer words, then to the earlier term. An
    n-gram never occurs more often than each of its words, so every n-gram kept
    keeps its words. The ONNX converter needs them: it recovers an n-gram's
    words by looking them up in the vocabulary, and guesses wrong (or fails)
    when they are missing.
    """
    words = np.fromiter((t.count(" ") for t in terms), dtype=np.int64, count=len(terms))
    order = np.lexsort((np.arange(len(terms)), words, -np.asarray(counts)))
    return np.sort(order[:limit])


class WordVectorizer(CountVectorizer):
    """A CountVectorizer whose ``max_features`` cut follows :func:`most_frequent`.

    scikit-learn breaks ties at the cut in an order of its own, which can keep
    a bigram or trigram while dropping one of its words. Only the cut differs;
    fitting, transforming and the ONNX export are CountVectorizer's.
    """

    def _limit_features(self, X, vocabulary, high=None, low=None, limit=None):
        X = super()._limit_features(X, vocabulary, high, low, None)
        if isinstance(X, tuple):  # scikit-learn returns (X, set()) when nothing is pruned
            X = X[0]
        if limit is None or len(vocabulary) <= limit:
            return X
        terms = sorted(vocabulary, key=vocabulary.__getitem__)
        counts = np.asarray(X.sum(axis=0)).ravel()
        kept = most_frequent(terms, counts, limit)
        vocabulary.clear()
        vocabulary.update((terms[old], new) for new, old in enumerate(kept))
        return X[:, kept]


def frequent_categories(values, min_count: int) -> list[str]:
    """Values seen at least ``min_count`` times; rarer and unseen ones encode as all zeros."""
    counts = Counter(values)
    kept = sorted(v for v, n in counts.items() if n >= min_count)
    if MISSING not in kept:
        kept.append(MISSING)
    return kept


def build_feature_pipeline(
    frame,
    spec: FeatureSpec,
    max_features: int = 5000,
    min_df: int = 3,
    ngram_max: int = 3,
    min_category_count: int = MIN_CATEGORY_COUNT,
    char_ngrams: tuple[int, int] | None = None,
    char_max_features: int = 2000,
) -> ColumnTransformer:
    """Return an unfitted ColumnTransformer for the inputs of ``spec``.

    Parameters
    ----------
    frame
        The training rows (a :func:`features.inputs.feature_frame` table). The
        metadata categories are fixed from it, so that values seen fewer than
        ``min_category_count`` times share the all-zero rare bucket with values
        never seen in training.
    spec
        The model inputs.
    max_features, min_df, ngram_max
        Word n-grams from 1 to ``ngram_max`` tokens, kept when they occur in at
        least ``min_df`` tickets, at most ``max_features`` of the most frequent.
        LightGBM cannot split on a column with fewer non-zero rows than its
        ``min_child_samples``, so a lower ``min_df`` only adds dead columns.
    char_ngrams, char_max_features
        ``(low, high)`` lengths of character n-grams of the Chinese text, or
        None for none; at most ``char_max_features`` of the most frequent.
    """
    min_df = min(min_df, max(1, len(frame) // 2))
    text = WordVectorizer(
        token_pattern=TOKEN_PATTERN,
        lowercase=False,
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_features=max_features,
        binary=True,
        dtype=np.float32,
    )
    transformers = [(TOKENS, text, TOKENS)]
    if char_ngrams is not None:
        characters = WordVectorizer(
            token_pattern=CHARACTER_PATTERN,
            lowercase=False,
            ngram_range=tuple(char_ngrams),
            min_df=min_df,
            max_features=char_max_features,
            binary=True,
            dtype=np.float32,
        )
        transformers.append((CHARACTERS, characters, TOKENS))
    for name in spec.categorical:
        categories = frequent_categories(frame[name].tolist(), min_category_count)
        encoder = OneHotEncoder(
            categories=[categories], handle_unknown="ignore", dtype=np.float32
        )
        transformers.append((name, encoder, [name]))
    if spec.numeric:
        transformers.append(("time", "passthrough", list(spec.numeric)))
    return ColumnTransformer(transformers, sparse_threshold=1.0)



# Vocabulary from counts ------------------------------------------------------------
#
# A feature pipeline can be fitted from counts taken over parts of the rows.
# Each part is counted where it lives (a Dask worker, a forked process). The
# counts are summed, and the sums fix the vocabularies and categories, so the
# result equals a fit on all the rows at once.


def count_terms(rows, template: ColumnTransformer) -> dict[str, Any]:
    """Document and term frequencies per text vectoriser, value counts per encoder.

    ``template`` is an unfitted :func:`build_feature_pipeline` result; ``rows``
    are feature-frame rows.
    """
    counts: dict[str, Any] = {}
    for name, transformer, columns in template.transformers:
        if isinstance(transformer, CountVectorizer):
            analyse = transformer.build_analyzer()
            documents, terms = Counter(), Counter()
            for text in rows[columns].tolist():
                found = analyse(text)
                terms.update(found)
                documents.update(set(found))
            counts[name] = (documents, terms)
        elif isinstance(transformer, OneHotEncoder):
            column = columns[0] if isinstance(columns, list) else columns
            counts[name] = Counter(rows[column].tolist())
    return counts


def select_vocabulary(documents: Counter, terms: Counter, n_documents: int, vectorizer) -> dict:
    """Apply a CountVectorizer's ``min_df``, ``max_df`` and ``max_features`` to summed counts.

    Terms are ranked by total count (document count when ``binary``), and a
    tie is broken as :class:`WordVectorizer` breaks it, so a fit from counts
    keeps the vocabulary of a fit on all rows.
    """

    def bound(value, default):
        if value is None:
            return default
        return value if isinstance(value, numbers.Integral) else value * n_documents

    low = bound(vectorizer.min_df, 1)
    high = bound(vectorizer.max_df, n_documents)
    kept = sorted(t for t, n in documents.items() if low <= n <= high)
    limit = vectorizer.max_features
    if limit is not None and len(kept) > limit:
        ranking = documents if vectorizer.binary else terms
        totals = np.array([ranking[t] for t in kept])
        kept = [kept[i] for i in most_frequent(kept, totals, limit)]
    return {term: index for index, term in enumerate(kept)}


def fit_from_counts(
    template: ColumnTransformer,
    parts: list[dict[str, Any]],
    n_documents: int,
    sample,
    min_category_count: int = MIN_CATEGORY_COUNT,
) -> ColumnTransformer:
    """Fit ``template`` from the :func:`count_terms` of parts covering ``n_documents`` rows.

    The summed counts fix the vectorisers' vocabularies and the encoders'
    categories. ``sample`` (a few of the rows) then fits the rest of the
    pipeline, which does not depend on the rows once those are fixed.
    """
    for name, transformer, _ in template.transformers:
        if isinstance(transformer, CountVectorizer):
            documents, terms = Counter(), Counter()
            for counts in parts:
                documents.update(counts[name][0])
                terms.update(counts[name][1])
            transformer.set_params(vocabulary=select_vocabulary(documents, terms, n_documents, transformer))
        elif isinstance(transformer, OneHotEncoder):
            values = Counter()
            for counts in parts:
                values.update(counts[name])
            kept = sorted(v for v, n in values.items() if n >= min_category_count)
            if MISSING not in kept:
                kept.append(MISSING)
            transformer.set_params(categories=[kept])
    return template.fit(sample)


__all__ = [
    "CHARACTERS",
    "CHARACTER_PATTERN",
    "MIN_CATEGORY_COUNT",
    "TOKEN_PATTERN",
    "WordVectorizer",
    "build_feature_pipeline",
    "count_terms",
    "fit_from_counts",
    "frequent_categories",
    "most_frequent",
    "select_vocabulary",
]
