"""The scikit-learn feature pipeline: bag of jieba tokens plus metadata encoders.

Every output column is a count or a 0/1 indicator, so float32 (ONNX) and
float64 (LightGBM) see the same values and tree splits cannot flip between the
fitted model and its ONNX export.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import OneHotEncoder

from .inputs import MISSING, TOKENS, FeatureSpec

# Tokens are separated by single spaces; the explicit pattern keeps Chinese tokens,
# which the ONNX converter's default ASCII-only pattern would drop.
TOKEN_PATTERN = r"\S+"


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
    min_df: int = 2,
    ngram_max: int = 2,
    min_category_count: int = 3,
) -> ColumnTransformer:
    """Return an unfitted ColumnTransformer for the inputs of ``spec``.

    Categories are fixed from ``frame`` here, so that values seen fewer than
    ``min_category_count`` times share the all-zero rare bucket with unseen ones.
    """
    text = CountVectorizer(
        token_pattern=TOKEN_PATTERN,
        lowercase=False,
        ngram_range=(1, ngram_max),
        min_df=min(min_df, max(1, len(frame) // 2)),
        max_features=max_features,
        binary=True,
        dtype=np.float32,
    )
    transformers = [(TOKENS, text, TOKENS)]
    for name in spec.categorical:
        categories = frequent_categories(frame[name].tolist(), min_category_count)
        encoder = OneHotEncoder(
            categories=[categories], handle_unknown="ignore", dtype=np.float32
        )
        transformers.append((name, encoder, [name]))
    if spec.numeric:
        transformers.append(("time", "passthrough", list(spec.numeric)))
    return ColumnTransformer(transformers, sparse_threshold=1.0)


__all__ = ["TOKEN_PATTERN", "build_feature_pipeline", "frequent_categories"]
