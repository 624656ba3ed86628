"""Text normalisation and jieba tokenisation, shared by training and serving.

Training and serving call the same :func:`tokenize`, so a ticket yields the same
tokens in both. Placeholders replace values that vary between otherwise equal
tickets (dates, times, addresses, numbers), so the models learn words, not ids.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from pathlib import Path

DOMAIN_DICTIONARY = Path(__file__).parent / "dict" / "it_ops.txt"

# Every token string fed to the vectoriser starts with this token, so that a
# ticket without words still gives ONNX's tokenizer one token to work on.
DOC_TOKEN = "<doc>"

# Order matters: longer, more specific patterns are replaced first.
_MASKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (placeholder, re.compile(pattern))
    for placeholder, pattern in (
        ("<url>", r"(?:https?|ftp)://[^\s，。；]+|www\.[a-z0-9.-]+\.[a-z]{2,}[^\s，。；]*"),
        ("<email>", r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+"),
        ("<ip>", r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\d.])"),
        (
            "<date>",
            r"\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*[日号]?"
            r"|\d{4}\s*年\s*\d{1,2}\s*月"
            r"|\d{1,2}\s*月\s*\d{1,2}\s*[日号]",
        ),
        (
            "<time>",
            r"(?<!\d)\d{1,2}\s*[:：]\s*\d{2}(?:\s*[:：]\s*\d{2}(?:\.\d+)?)?(?!\d)"
            r"|\d{1,2}\s*[时点]\s*\d{1,2}\s*分(?:\s*\d{1,2}\s*秒)?",
        ),
        ("<phone>", r"(?<!\d)(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?!\d)"),
        ("<id>", r"(?<![a-z0-9])[a-z]{1,8}[-_]?\d[\d-]{5,}(?![a-z0-9])|(?<!\d)\d{8,}(?!\d)"),
        ("<num>", r"(?<![a-z\d.])\d{3,}(?:\.\d+)?(?![a-z\d])"),
    )
)
PLACEHOLDERS = tuple(p for p, _ in _MASKS)
# Dates, times and ids say when and which, not why: they are left out of the
# token string, so that adding or changing one cannot change a prediction.
UNSCORED_PLACEHOLDERS = frozenset({"<date>", "<time>", "<id>"})
_SPLIT = re.compile("(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")")
_WHITESPACE = re.compile(r"\s+")

_lock = threading.Lock()
_tokenizer = None
_dictionary = DOMAIN_DICTIONARY


def normalize_text(text: str | None) -> str:
    """NFKC-normalise, case-fold and mask variable values with placeholder tokens.

    Full-width digits and letters become ASCII first, so that jieba sees ``１２``
    as one number and the masks apply to it.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _WHITESPACE.sub(" ", text).strip()
    for placeholder, pattern in _MASKS:
        text = pattern.sub(f" {placeholder} ", text)
    return _WHITESPACE.sub(" ", text).strip()


def get_tokenizer():
    """Return the process-wide jieba tokenizer with the domain dictionary loaded.

    The dictionary loads once per process; call this before forking workers so
    that they inherit the loaded dictionary.
    """
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                tokenizer.load_userdict(str(_dictionary))
                _tokenizer = tokenizer
    return _tokenizer


def use_dictionary(path: str | Path) -> None:
    """Make jieba use the domain dictionary at ``path`` (a bundle's copy).

    The tokenizer is rebuilt only when the file's content differs from the one
    loaded, so a bundle made with the shipped dictionary costs nothing.
    """
    global _tokenizer, _dictionary
    path = Path(path)
    with _lock:
        if path.read_bytes() == Path(_dictionary).read_bytes():
            return
        _dictionary = path
        _tokenizer = None
        _block_words.cache_clear()


def _is_word(token: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in token)


# jieba cuts a text block by block. A block is a run of the characters its
# default pattern matches (Han characters, Latin letters, digits and a few
# signs), and its words do not depend on the text around it. Tickets repeat
# their phrases (most blocks of the ICT records occur more than once), so the
# words of recent blocks are cached.
BLOCK_CACHE_SIZE = 65_536
_BLOCK = re.compile(r"([\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-]+)")


@functools.lru_cache(maxsize=BLOCK_CACHE_SIZE)
def _block_words(block: str) -> tuple[str, ...]:
    """Return the words jieba cuts one block into, without spaces and punctuation."""
    words = []
    for token in get_tokenizer().cut(block, HMM=True):
        token = token.strip()
        if token and _is_word(token):
            words.append(token)
    return tuple(words)


def tokenize(text: str | None) -> list[str]:
    """Normalise a text and cut it into jieba tokens; punctuation is dropped."""
    normalized = normalize_text(text)
    if not normalized:
        return []
    tokens: list[str] = []
    for part in _SPLIT.split(normalized):
        if part in PLACEHOLDERS:
            tokens.append(part)
            continue
        for index, piece in enumerate(_BLOCK.split(part)):
            if index % 2:
                tokens.extend(_block_words(piece))
            else:
                # Between blocks jieba yields single characters; only letters
                # and digits among them are words.
                tokens.extend(ch for ch in piece if not ch.isspace() and _is_word(ch))
    return tokens


def token_string(text: str | None) -> str:
    """Return the space-separated token string the vectorisers read.

    It starts with :data:`DOC_TOKEN` and leaves out :data:`UNSCORED_PLACEHOLDERS`.
    """
    tokens = [t for t in tokenize(text) if t not in UNSCORED_PLACEHOLDERS]
    return " ".join([DOC_TOKEN, *tokens])


# Characters next to a line break that a date or time mask can join across it
# (digits, and the signs of the <date> and <time> patterns).
_JOINING = frozenset("-/.:：年月日号时点分秒")


def _joins(character: str) -> bool:
    return any(c.isdigit() or c in _JOINING for c in unicodedata.normalize("NFKC", character))


def appended_token_string(first_text: str, first_tokens: str, second_text: str, second_tokens: str) -> str | None:
    """Return the token string of ``first_text + "\n" + second_text`` from the parts' token strings.

    Tokens never span a line break: whitespace ends every jieba block, and only
    the date and time masks match across whitespace. Those can join the two
    texts when both characters around the break are digits or date and time
    signs, and then None is returned so that the caller tokenises the joined
    text.
    """
    last, first = first_text.rstrip()[-1:], second_text.lstrip()[:1]
    if last and first and _joins(last) and _joins(first):
        return None
    tail = second_tokens[len(DOC_TOKEN) :]
    return first_tokens + tail


__all__ = [
    "DOC_TOKEN",
    "DOMAIN_DICTIONARY",
    "PLACEHOLDERS",
    "UNSCORED_PLACEHOLDERS",
    "appended_token_string",
    "get_tokenizer",
    "normalize_text",
    "token_string",
    "tokenize",
    "use_dictionary",
]
