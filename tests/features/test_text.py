"""Text normalisation and tokenisation, and identical inputs for training and serving."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.inputs import FeatureSpec, feature_frame, frame_feeds, ticket_feeds
from features.text import DOC_TOKEN, normalize_text, token_string, tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("６月６日１５：１０，ＥＲＰ宕机", "<date> <time> ,erp宕机"),
        ("服务器10.2.3.4:8080无响应", "服务器 <ip> 无响应"),
        ("2017-03-12 10:30:05 告警", "<date> <time> 告警"),
        ("工单INC20250312001已关闭", "工单 <id> 已关闭"),
        ("联系13812345678处理", "联系 <phone> 处理"),
        ("见 https://example.com/a?b=1 与 ops@example.com", "见 <url> 与 <email>"),
        ("共1234条记录", "共 <num> 条记录"),
    ],
)
def test_normalize_masks_variable_values(text, expected):
    assert normalize_text(text) == expected


def test_tokenize_keeps_domain_terms_and_drops_punctuation():
    tokens = tokenize("核心交换机端口频繁up/down，多个业务系统访问超时")
    assert "核心交换机" in tokens
    assert "up" in tokens and "down" in tokens
    assert "，" not in tokens and "/" not in tokens


def test_tokenize_full_width_digits_as_one_number():
    """jieba cuts full-width digits one by one unless NFKC runs first."""
    assert tokenize("错误码１２３４５") == tokenize("错误码12345")
    assert "<num>" in tokenize("错误码１２３４５")


@pytest.mark.parametrize("text", ["", "   \t\n", None, "😀🔥"])
def test_token_string_never_empty(text):
    assert token_string(text) == DOC_TOKEN


def test_training_and_serving_inputs_identical():
    tickets = pd.DataFrame(
        {
            "ticket_id": ["a", "b", "c"],
            "created_at": pd.to_datetime(["2025-03-05 09:15", "2025-03-15 23:59", "2025-03-31 00:01"]),
            "title": ["", "ＶＰＮ", None],
            "description": ["数据库表空间满，业务系统无法写入", "  ", "Oracle ORA-01653 😀"],
            "department": ["国网信通", "", None],
            "channel": ["IMS监控", "IMS监控", "电话"],
            "system": ["I6000", "i6000", "ＥＲＰ"],
        }
    )
    spec = FeatureSpec()
    training = frame_feeds(feature_frame(tickets, spec))
    records = tickets.to_dict("records")
    for record in records:
        record["created_at"] = record["created_at"].to_pydatetime()
    serving = ticket_feeds(records, spec)
    assert set(training) == set(serving)
    for name in training:
        assert training[name].shape == serving[name].shape, name
        assert training[name].dtype == serving[name].dtype, name
        np.testing.assert_array_equal(training[name], serving[name], err_msg=name)
    assert serving["system"][0, 0] == serving["system"][1, 0] == "i6000"


def test_time_features_period_of_month():
    spec = FeatureSpec()
    feeds = ticket_feeds(
        [{"created_at": datetime(2025, 1, d, 8)} for d in (1, 10, 11, 20, 21, 31)] + [{}], spec
    )
    assert feeds["month_period"].ravel().tolist() == [0, 0, 1, 1, 2, 2, -1]
    assert feeds["hour"].ravel().tolist()[:1] == [8.0]


def _jieba_on_whole_parts(text: str) -> list[str]:
    """Tokens from jieba run on each whole part between placeholders, without the block cache."""
    from features import text as module

    normalized = module.normalize_text(text)
    if not normalized:
        return []
    tokens = []
    for part in module._SPLIT.split(normalized):
        if part in module.PLACEHOLDERS:
            tokens.append(part)
            continue
        for token in module.get_tokenizer().cut(part, HMM=True):
            token = token.strip()
            if token and module._is_word(token):
                tokens.append(token)
    return tokens


def test_block_cache_gives_jieba_tokens(ict_path, ict_mapping):
    from features.loading import load_tickets
    from features.text import _block_words

    tickets = load_tickets(ict_path, ict_mapping).tickets
    texts = tickets["description"].fillna("").tolist() + tickets["closure_notes"].fillna("").tolist()
    texts += [
        "ＥＲＰ系统１２月３日１０：３０无法登录，错误码５００",
        "系统又挂了😡🔥，用户全部无法访问🙏",
        " \t\n　 ",
        "Café naïve résumé ошибка сервера",
        "ORA-12541: TNS:no listener @ 10.1.2.3, C++/C# 服务",
    ]
    _block_words.cache_clear()
    for _ in range(2):  # cold, then warm cache
        for text in texts:
            assert tokenize(text) == _jieba_on_whole_parts(text), text
    assert _block_words.cache_info().hits > 0
