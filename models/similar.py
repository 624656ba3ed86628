"""Index of closed tickets: similar-ticket search and the recurrence rule.

The index stores one L2-normalised TF-IDF vector per closed ticket. Beside it
are the fields a handler reads: short excerpts of the intake text and of the
closure notes, the recorded root cause and category, the handling time, the
creation and closing times and the affected system. A vector's terms are the jieba tokens of the
intake text plus one term per known metadata value (``system`` = ``ERP``...),
so that tickets with the same words on the same system rank first.

Placeholders (``<date>``, ``<ip>``...) and the ``<doc>`` sentinel are left out
of the vectors, so two reports of one fault on different days get the same
vector. The vocabulary and the IDF weights are stored with the vectors, and
the serving path needs numpy and scipy only. Search is exact. A query reads
the posting rows of its own terms only, so its cost grows with the number of
tickets that share a term with it.

Files inside a bundle folder, hashed by the bundle manifest like every file::

    similar/vectors.npz   CSR matrix, terms x closed tickets, float32
    similar/terms.npz     vocabulary and IDF weights
    similar/tickets.npz   ids, text and note excerpts, causes, categories,
                          systems, handling hours, creation and closing times

Strings are stored as one UTF-8 byte array plus offsets, so files load with
``allow_pickle=False`` and only the tickets a query returns are decoded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from collections.abc import Mapping as MappingType
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from features.inputs import MISSING, categorical_value, ticket_text
from features.schema import METADATA_FIELDS, TEXT_FIELDS
from features.text import DOC_TOKEN, PLACEHOLDERS, tokenize

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
VECTORS_FILE = "similar/vectors.npz"
TERMS_FILE = "similar/terms.npz"
TICKETS_FILE = "similar/tickets.npz"
INDEX_FILES = (VECTORS_FILE, TERMS_FILE, TICKETS_FILE)

EXCERPT_CHARS = 120
# Closed tickets kept in an index: the newest by closing time. Exact search over
# one million demo tickets takes about 5 ms of CPU per query and 118 MB of
# bundle (benchmarks/similar_bench.py); older tickets beyond it are left out.
MAX_INDEX_TICKETS = 1_000_000
DEFAULT_K = 5
RECURRENCE_WINDOW_DAYS = 30.0
# Cosine similarity at or above which a ticket counts as a repeat of a closed
# one. Copies that differ only in dates, times, numbers or ids score 1.0. On the
# ICT records, pairs on one system at 0.8 or more describe the same symptom,
# most of them within days. Pairs between 0.6 and 0.8 are mostly the same
# monitoring-alert wording with other indicators or another unit.
RECURRENCE_THRESHOLD = 0.8
# Largest number of tickets tied with the k-th similarity that are sorted by
# closing time; beyond it the tie is broken in index order.
MAX_TIE_ROWS = 10_000
# Shares of the best similarity tried in turn as the cut-off for top-k candidates.
CANDIDATE_FRACTIONS = (0.9, 0.7, 0.5, 0.3, 0.1)

_EXCLUDED_TOKENS = frozenset(PLACEHOLDERS) | {DOC_TOKEN}
# Text is whitespace-collapsed before tokenising, so no word contains a tab and
# metadata terms never collide with words.
_METADATA_SEPARATOR = "\t"
_NO_TIME = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SimilarTicket:
    """A closed ticket returned by a search, with its similarity to the query."""

    ticket_id: str
    similarity: float
    description: str
    root_cause: str | None
    category: str | None
    notes: str
    handling_hours: float | None
    created_at: str | None
    closed_at: str | None
    system: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recurrence:
    """The closed ticket that a new ticket repeats, by the recurrence rule."""

    ticket_id: str
    similarity: float
    closed_at: str | None
    days_since_closed: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Neighbourhood:
    """Search result of one query: the nearest closed tickets, a possible recurrence."""

    neighbours: list[SimilarTicket]
    recurrence: Recurrence | None


# Terms and times ---------------------------------------------------------------


def text_terms(tokens: Sequence[str]) -> list[str]:
    """Return the tokens that enter a vector: words, without placeholders or ``<doc>``."""
    return [t for t in tokens if t and t not in _EXCLUDED_TOKENS]


def metadata_terms(ticket: MappingType[str, Any], fields: Sequence[str]) -> list[str]:
    """Return one term per known metadata value of ``ticket``, e.g. ``system<TAB>erp``."""
    terms = []
    for name in fields:
        value = categorical_value(ticket.get(name))
        if value != MISSING:
            terms.append(f"{name}{_METADATA_SEPARATOR}{value}")
    return terms


def _is_missing(value: Any) -> bool:
    """Return True for None, NaN, NaT and pandas' NA."""
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def to_seconds(value: Any) -> int:
    """Seconds since 1970 of a naive timestamp; the no-time sentinel when missing.

    Time-zone-aware values keep their wall-clock time and lose the zone, because
    the records of an export carry local times without a zone.
    """
    if _is_missing(value):
        return int(_NO_TIME)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[s]").astype(np.int64))
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or ISO 8601 string, got {value!r}")
    value = value.replace(tzinfo=None)
    return int((value - _EPOCH) // timedelta(seconds=1))


def seconds_column(values) -> np.ndarray:
    """Seconds since 1970 of a column of timestamps; the no-time sentinel for NaT."""
    import pandas as pd

    times = pd.to_datetime(pd.Series(values), errors="coerce")
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)
    # NaT converts to the minimum int64, which is the no-time sentinel.
    return times.to_numpy(dtype="datetime64[s]").astype(np.int64)


def id_hash(ticket_id: str) -> int:
    """Return a stable signed 64-bit hash of a ticket id."""
    digest = hashlib.blake2b(ticket_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _iso(seconds: int) -> str | None:
    if seconds == _NO_TIME:
        return None
    return (_EPOCH + timedelta(seconds=int(seconds))).isoformat(sep=" ")


def excerpt(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """Collapse whitespace and cut ``text`` to ``limit`` characters, marking a cut with …."""
    if _is_missing(text):
        return ""
    plain = " ".join(str(text).split())
    return plain if len(plain) <= limit else plain[:limit] + "…"


# Storage helpers ---------------------------------------------------------------


class StringColumn:
    """Strings stored as one UTF-8 byte array and offsets; decoded on access."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data = data
        self.offsets = offsets

    @classmethod
    def from_strings(cls, strings: Sequence[str]) -> StringColumn:
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return (
            self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")
        )

    def to_list(self) -> list[str]:
        return [self[i] for i in range(len(self))]

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        return {f"{name}.data": self.data, f"{name}.offsets": self.offsets}

    @classmethod
    def from_arrays(
        cls, arrays: MappingType[str, np.ndarray], name: str
    ) -> StringColumn:
        return cls(arrays[f"{name}.data"], arrays[f"{name}.offsets"])


def _encode_labels(values: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Integer codes into a sorted label list; -1 for missing values."""
    text = [None if _is_missing(v) or str(v) == "" else str(v) for v in values]
    labels = sorted({v for v in text if v is not None})
    index = {label: i for i, label in enumerate(labels)}
    codes = np.array([index[v] if v is not None else -1 for v in text], dtype=np.int32)
    return codes, labels


@dataclass
class TicketTable:
    """Columns of the closed tickets in an index, row i matching vector i."""

    ticket_id: StringColumn
    # 64-bit hashes of the ids, so a query can skip its own ticket without
    # decoding every candidate's id.
    ticket_hash: np.ndarray
    description: StringColumn
    notes: StringColumn
    root_cause: np.ndarray
    root_cause_labels: list[str]
    category: np.ndarray
    category_labels: list[str]
    system: np.ndarray
    system_labels: list[str]
    handling_hours: np.ndarray
    created_at: np.ndarray
    closed_at: np.ndarray

    _CODED = ("root_cause", "category", "system")

    def __len__(self) -> int:
        return len(self.ticket_id)

    def label(self, column: str, i: int) -> str | None:
        code = int(getattr(self, column)[i])
        return getattr(self, f"{column}_labels")[code] if code >= 0 else None

    def ticket(self, i: int, similarity: float) -> SimilarTicket:
        hours = float(self.handling_hours[i])
        return SimilarTicket(
            ticket_id=self.ticket_id[i],
            similarity=round(min(float(similarity), 1.0), 6),
            description=self.description[i],
            root_cause=self.label("root_cause", i),
            category=self.label("category", i),
            notes=self.notes[i],
            handling_hours=hours if np.isfinite(hours) else None,
            created_at=_iso(int(self.created_at[i])),
            closed_at=_iso(int(self.closed_at[i])),
            system=self.label("system", i),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            **self.ticket_id.arrays("ticket_id"),
            **self.description.arrays("description"),
            **self.notes.arrays("notes"),
        }
        arrays["ticket_hash"] = self.ticket_hash
        for name in self._CODED:
            arrays[name] = getattr(self, name)
            labels = StringColumn.from_strings(getattr(self, f"{name}_labels"))
            arrays.update(labels.arrays(f"{name}_labels"))
        arrays["handling_hours"] = self.handling_hours
        arrays["created_at"] = self.created_at
        arrays["closed_at"] = self.closed_at
        return arrays

    @classmethod
    def from_arrays(cls, arrays: MappingType[str, np.ndarray]) -> TicketTable:
        coded = {}
        for name in cls._CODED:
            coded[name] = arrays[name]
            coded[f"{name}_labels"] = StringColumn.from_arrays(
                arrays, f"{name}_labels"
            ).to_list()
        return cls(
            ticket_id=StringColumn.from_arrays(arrays, "ticket_id"),
            ticket_hash=arrays["ticket_hash"],
            description=StringColumn.from_arrays(arrays, "description"),
            notes=StringColumn.from_arrays(arrays, "notes"),
            handling_hours=arrays["handling_hours"],
            created_at=arrays["created_at"],
            closed_at=arrays["closed_at"],
            **coded,
        )


# The index ---------------------------------------------------------------------


class SimilarIndex:
    """Exact cosine search over the TF-IDF vectors of closed tickets.

    Parameters
    ----------
    terms
        Vocabulary; term ``j`` is row ``j`` of ``postings``.
    idf
        Smoothed IDF weight of each term, ``log((1 + n) / (1 + df)) + 1``.
    postings
        CSR matrix of shape ``(len(terms), len(table))``: the transposed,
        L2-normalised ticket vectors.
    table
        The closed tickets' columns.
    text_fields, metadata_fields
        Ticket fields whose tokens and values make the terms.
    """

    def __init__(
        self,
        terms: list[str],
        idf: np.ndarray,
        postings: sparse.csr_matrix,
        table: TicketTable,
        text_fields: Sequence[str],
        metadata_fields: Sequence[str],
    ):
        self.terms = terms
        self.term_index = {term: j for j, term in enumerate(terms)}
        self.idf = idf
        self.postings = postings
        self.table = table
        self.text_fields = tuple(text_fields)
        self.metadata_fields = tuple(metadata_fields)
        # A term missing from the vocabulary still counts in the query's norm,
        # with the weight of a term seen in no ticket, so that a query sharing
        # few of its words with a ticket does not look like a copy of it.
        self.unseen_idf = float(np.log(1.0 + len(table)) + 1.0)
        self._system_index = {label: i for i, label in enumerate(table.system_labels)}
        # Sorted id hashes, so a query finds its own ticket by binary search.
        self._hash_order = np.argsort(table.ticket_hash, kind="stable")
        self._sorted_hashes = table.ticket_hash[self._hash_order]

    def __len__(self) -> int:
        return len(self.table)

    # Building -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        term_lists: Sequence[Sequence[str]],
        table: TicketTable,
        text_fields: Sequence[str],
        metadata_fields: Sequence[str],
    ) -> SimilarIndex:
        """Build the index from each closed ticket's terms and its table row."""
        started = time.perf_counter()
        n = len(term_lists)
        lengths = np.fromiter((len(t) for t in term_lists), dtype=np.int64, count=n)
        vocabulary: dict[str, int] = {}
        term_ids = np.fromiter(
            (
                vocabulary.setdefault(t, len(vocabulary))
                for ts in term_lists
                for t in ts
            ),
            dtype=np.int64,
            count=int(lengths.sum()),
        )

        # One (ticket, term) key per occurrence; unique keys give the term counts.
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        size = max(len(vocabulary), 1)
        pairs, counts = np.unique(rows * size + term_ids, return_counts=True)
        rows, columns = pairs // size, pairs % size

        document_frequency = np.bincount(columns, minlength=len(vocabulary))
        idf = (np.log((1.0 + n) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
        weights = (1.0 + np.log(counts)) * idf[columns]
        norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=n))
        weights = weights / np.where(norms > 0, norms, 1.0)[rows]

        postings = sparse.csr_matrix(
            (weights.astype(np.float32), (columns, rows)), shape=(len(vocabulary), n)
        )
        terms = [""] * len(vocabulary)
        for term, j in vocabulary.items():
            terms[j] = term
        logger.info(
            "similar-ticket index: %d closed tickets, %d terms, built in %.1f s",
            n,
            len(terms),
            time.perf_counter() - started,
        )
        return cls(terms, idf, postings, table, text_fields, metadata_fields)

    # Querying -------------------------------------------------------------

    def ticket_terms(self, ticket: MappingType[str, Any]) -> list[str]:
        """Tokenise a ticket's text fields and add its metadata terms."""
        tokens = tokenize(ticket_text(ticket, _Fields(self.text_fields)))
        return text_terms(tokens) + metadata_terms(ticket, self.metadata_fields)

    def vectorize(self, term_lists: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        """Return the L2-normalised query vectors, one row per list of terms."""
        indptr, indices, values = [0], [], []
        for terms in term_lists:
            counts: dict[str, int] = {}
            for term in terms:
                counts[term] = counts.get(term, 0) + 1
            row: dict[int, float] = {}
            squares = 0.0
            for term, count in counts.items():
                j = self.term_index.get(term)
                idf = float(self.idf[j]) if j is not None else self.unseen_idf
                weight = (1.0 + np.log(count)) * idf
                squares += weight * weight
                if j is not None:
                    row[j] = weight
            norm = np.sqrt(squares) if squares > 0 else 1.0
            indices.extend(row)
            values.extend(w / norm for w in row.values())
            indptr.append(len(indices))
        return sparse.csr_matrix(
            (
                np.asarray(values, dtype=np.float32),
                np.asarray(indices, dtype=np.int64),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(len(term_lists), len(self.terms)),
        )

    def similarities(self, term_lists: Sequence[Sequence[str]]) -> Iterator[np.ndarray]:
        """Yield, per query, the cosine similarity to every closed ticket (dense)."""
        queries = self.vectorize(term_lists)
        for r in range(queries.shape[0]):
            low, high = queries.indptr[r], queries.indptr[r + 1]
            if low == high:
                yield np.zeros(len(self.table), dtype=np.float32)
                continue
            # The transposed slice of posting rows is a CSC matrix, and its product
            # with the query weights is the dense score vector.
            rows = self.postings[queries.indices[low:high]]
            yield np.asarray(rows.T @ queries.data[low:high], dtype=np.float32)

    def search(
        self,
        tickets: Sequence[MappingType[str, Any]],
        k: int = DEFAULT_K,
        window_days: float = RECURRENCE_WINDOW_DAYS,
        threshold: float = RECURRENCE_THRESHOLD,
        now: datetime | None = None,
    ) -> list[Neighbourhood]:
        """Return the ``k`` nearest closed tickets and the recurrence of each ticket.

        A ticket without ``created_at`` is taken as created at ``now`` (the
        current local time by default), as at intake.
        """
        term_lists = [self.ticket_terms(t) for t in tickets]
        now_seconds = to_seconds(now or datetime.now())
        created = [to_seconds(t.get("created_at")) for t in tickets]
        created = [now_seconds if c == _NO_TIME else c for c in created]
        systems = [t.get("system") for t in tickets]
        ids = [t.get("ticket_id") for t in tickets]
        return self.search_terms(
            term_lists,
            k,
            created,
            systems,
            ids,
            window_days=window_days,
            threshold=threshold,
        )

    def search_terms(
        self,
        term_lists: Sequence[Sequence[str]],
        k: int,
        created: Sequence[int],
        systems: Sequence[Any],
        ticket_ids: Sequence[Any] | None = None,
        window_days: float = RECURRENCE_WINDOW_DAYS,
        threshold: float = RECURRENCE_THRESHOLD,
    ) -> list[Neighbourhood]:
        """Search with prepared terms; ``created`` gives seconds since 1970 per query.

        A closed ticket with the query's own ``ticket_id`` is skipped, so tickets
        already in the index can be queried against it.
        """
        if k < 0:
            raise ValueError(f"k must be zero or more, got {k}")
        ticket_ids = (
            list(ticket_ids) if ticket_ids is not None else [None] * len(term_lists)
        )
        results = []
        for q, scores in enumerate(self.similarities(term_lists)):
            scores[self._own_rows(ticket_ids[q])] = 0.0
            results.append(
                Neighbourhood(
                    neighbours=self._nearest(scores, k),
                    recurrence=self._recurrence(
                        scores, created[q], systems[q], window_days, threshold
                    ),
                )
            )
        return results

    def _own_rows(self, ticket_id: Any) -> np.ndarray:
        if ticket_id is None:
            return np.array([], dtype=np.int64)
        wanted = str(ticket_id)
        key = id_hash(wanted)
        low = np.searchsorted(self._sorted_hashes, key, side="left")
        high = np.searchsorted(self._sorted_hashes, key, side="right")
        same_hash = self._hash_order[low:high]
        return np.array(
            [i for i in same_hash if self.table.ticket_id[int(i)] == wanted],
            dtype=np.int64,
        )

    def _ranked(
        self, scores: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Rank ``rows`` (all by default) and keep ``k``: highest similarity, then latest closed."""
        pool = scores if rows is None else scores[rows]
        if k == 0 or not len(pool):
            return np.array([], dtype=np.int64)
        if len(pool) > k:
            chosen = np.argpartition(-pool, k - 1)[:k]
            # Rows tied with the k-th score join the tie-break below, unless the
            # tie is so large that sorting it would cost more than the search.
            tied = np.flatnonzero(pool == pool[chosen].min())
            if len(tied) <= MAX_TIE_ROWS:
                chosen = np.union1d(chosen, tied)
        else:
            chosen = np.arange(len(pool))
        chosen = chosen if rows is None else rows[chosen]
        order = np.lexsort((-self.table.closed_at[chosen], -scores[chosen]))
        return chosen[order][:k]

    def _nearest(self, scores: np.ndarray, k: int) -> list[SimilarTicket]:
        rows = _top_candidates(scores, k)
        return [
            self.table.ticket(int(i), float(scores[i]))
            for i in self._ranked(scores, k, rows)
        ]

    def _recurrence(
        self,
        scores: np.ndarray,
        created: int,
        system: Any,
        window_days: float,
        threshold: float,
    ) -> Recurrence | None:
        """Apply the recurrence rule to one query's similarities.

        The rule: among closed tickets on the same affected system that were
        created no later than the query and closed at most ``window_days``
        before it was created, the most similar one, if its similarity is at
        least ``threshold``. A ticket still open when the query came (closed
        after it) counts too, as a duplicate. Tickets without a system never
        match.
        """
        code = self._system_index.get(categorical_value(system))
        if code is None or created == _NO_TIME:
            return None
        table = self.table
        rows = np.flatnonzero(scores >= threshold - 1e-6)
        window = int(window_days * _SECONDS_PER_DAY)
        rows = rows[
            (table.system[rows] == code)
            & (table.created_at[rows] <= created)
            & (created - table.closed_at[rows] <= window)
        ]
        if not len(rows):
            return None
        row = int(self._ranked(scores, 1, rows)[0])
        return Recurrence(
            ticket_id=table.ticket_id[row],
            similarity=round(min(float(scores[row]), 1.0), 6),
            closed_at=_iso(int(table.closed_at[row])),
            days_since_closed=round(
                (created - int(table.closed_at[row])) / _SECONDS_PER_DAY, 3
            ),
        )

    # Files ----------------------------------------------------------------

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the index files into a bundle folder; return its manifest entry."""
        folder = Path(folder)
        (folder / VECTORS_FILE).parent.mkdir(parents=True, exist_ok=True)
        sparse.save_npz(folder / VECTORS_FILE, self.postings, compressed=True)
        np.savez_compressed(
            folder / TERMS_FILE,
            idf=self.idf,
            **StringColumn.from_strings(self.terms).arrays("terms"),
        )
        np.savez_compressed(folder / TICKETS_FILE, **self.table.arrays())
        return {
            "format": INDEX_FORMAT,
            "files": list(INDEX_FILES),
            "tickets": len(self),
            "terms": len(self.terms),
            "text_fields": list(self.text_fields),
            "metadata_fields": list(self.metadata_fields),
            "excerpt_chars": EXCERPT_CHARS,
        }

    @classmethod
    def load(cls, folder: str | Path, entry: MappingType[str, Any]) -> SimilarIndex:
        """Read the index files named by a manifest entry from a bundle folder."""
        folder = Path(folder)
        if entry.get("format") != INDEX_FORMAT:
            raise ValueError(
                f"similar-ticket index in {folder} has format {entry.get('format')!r}; "
                f"this release reads format {INDEX_FORMAT}; retrain to rebuild it"
            )
        postings = sparse.load_npz(folder / VECTORS_FILE).tocsr()
        with np.load(folder / TERMS_FILE, allow_pickle=False) as arrays:
            terms = StringColumn.from_arrays(arrays, "terms").to_list()
            idf = arrays["idf"]
        with np.load(folder / TICKETS_FILE, allow_pickle=False) as arrays:
            table = TicketTable.from_arrays(
                {name: arrays[name] for name in arrays.files}
            )
        return cls(
            terms, idf, postings, table, entry["text_fields"], entry["metadata_fields"]
        )


def _top_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows with a positive score that include the ``k`` best ones.

    Comparing with a threshold is many times faster than a partition of the
    whole array, so thresholds step down from the best score until at least
    ``k`` rows pass, and only those rows are partitioned.
    """
    if k == 0 or not len(scores):
        return np.array([], dtype=np.int64)
    best = float(scores.max())
    if best <= 0:
        return np.array([], dtype=np.int64)
    for fraction in CANDIDATE_FRACTIONS:
        rows = np.flatnonzero(scores >= best * fraction)
        if len(rows) >= k:
            return rows
    return np.flatnonzero(scores > 0)


@dataclass(frozen=True)
class _Fields:
    """The one attribute of a feature spec that :func:`ticket_text` reads."""

    text_fields: tuple[str, ...]


# Building from canonical tickets -------------------------------------------------


def _objects(rows, name: str) -> list[Any]:
    """Return a column as Python values, None for missing ones and all None when absent."""
    if name not in rows:
        return [None] * len(rows)
    column = rows[name].astype(object)
    return column.where(column.notna(), None).tolist()


def _categorical_values(rows, name: str) -> list[str]:
    """Apply ``categorical_value`` to a column, once per distinct value."""
    values = _objects(rows, name)
    folded = {v: categorical_value(v) for v in set(values)}
    return [folded[v] for v in values]


def closed_positions(
    tickets, max_tickets: int | None = MAX_INDEX_TICKETS
) -> np.ndarray:
    """Positions of the closed tickets (with ``closed_at``), at most the newest ``max_tickets``."""
    if "closed_at" not in tickets:
        return np.array([], dtype=np.int64)
    positions = np.flatnonzero(tickets["closed_at"].notna().to_numpy())
    if max_tickets is not None and len(positions) > max_tickets:
        closed = seconds_column(tickets["closed_at"].iloc[positions])
        newest = np.argsort(closed, kind="stable")[len(positions) - max_tickets :]
        logger.warning(
            "similar-ticket index keeps the newest %d of %d closed tickets; "
            "older ones are not searched",
            max_tickets,
            len(positions),
        )
        positions = np.sort(positions[newest])
    return positions


def _text_excerpts(rows, text_fields: Sequence[str]) -> list[str]:
    """Excerpts of the text fields of each row, joined by line breaks."""
    columns = [_objects(rows, name) for name in text_fields if name in rows]
    texts = []
    for parts in zip(*columns) if columns else ([] for _ in range(len(rows))):
        present = [str(p) for p in parts if not _is_missing(p) and str(p)]
        texts.append(excerpt("\n".join(present)))
    return texts


def closed_ticket_table(
    tickets,
    max_tickets: int | None = MAX_INDEX_TICKETS,
    text_fields: Sequence[str] = TEXT_FIELDS,
) -> tuple[np.ndarray, TicketTable]:
    """Select the closed tickets of a DataFrame and return their positions and table."""
    import pandas as pd

    positions = closed_positions(tickets, max_tickets)
    rows = tickets.iloc[positions]

    root_cause, root_cause_labels = _encode_labels(_objects(rows, "root_cause"))
    category, category_labels = _encode_labels(_objects(rows, "category"))
    system, system_labels = _encode_labels(_categorical_values(rows, "system"))
    if MISSING in system_labels:
        # A ticket without a system matches no other ticket's system.
        missing = system_labels.index(MISSING)
        system = np.where(system == missing, -1, system).astype(np.int32)
    hours = (
        pd.to_numeric(rows["handling_hours"], errors="coerce").to_numpy(
            dtype=np.float32
        )
        if "handling_hours" in rows
        else np.full(len(rows), np.nan, dtype=np.float32)
    )
    ids = [str(v) for v in _objects(rows, "ticket_id")]
    table = TicketTable(
        ticket_id=StringColumn.from_strings(ids),
        ticket_hash=np.fromiter(
            (id_hash(v) for v in ids), dtype=np.int64, count=len(ids)
        ),
        description=StringColumn.from_strings(_text_excerpts(rows, text_fields)),
        notes=StringColumn.from_strings(
            [excerpt(v) for v in _objects(rows, "closure_notes")]
        ),
        root_cause=root_cause,
        root_cause_labels=root_cause_labels,
        category=category,
        category_labels=category_labels,
        system=system,
        system_labels=system_labels,
        handling_hours=hours,
        created_at=seconds_column(rows.get("created_at", [None] * len(rows))),
        closed_at=seconds_column(rows.get("closed_at", [])),
    )
    return positions, table


def build_index(
    tickets,
    text_fields: Sequence[str],
    metadata_fields: Sequence[str],
    tokens: Sequence[str] | None = None,
    max_tickets: int | None = MAX_INDEX_TICKETS,
) -> SimilarIndex:
    """Build the index of the closed tickets (those with ``closed_at``) of a DataFrame.

    ``tokens`` may give each row's token string from training (``<doc> w1 w2``),
    so the texts are not tokenised twice. Beyond ``max_tickets`` closed tickets
    only the newest by closing time are kept.
    """
    positions, table = closed_ticket_table(tickets, max_tickets, text_fields)
    rows = tickets.iloc[positions]
    if tokens is not None:
        words = [tokens[p].split(" ") for p in positions]
    else:
        fields = _Fields(tuple(text_fields))
        present = [f for f in text_fields if f in rows]
        words = [
            tokenize(ticket_text(r, fields)) for r in rows[present].to_dict("records")
        ]
    metadata = [
        [
            f"{name}{_METADATA_SEPARATOR}{value}" if value != MISSING else None
            for value in _categorical_values(rows, name)
        ]
        for name in metadata_fields
    ]
    term_lists = [
        text_terms(row_words)
        + [column[i] for column in metadata if column[i] is not None]
        for i, row_words in enumerate(words)
    ]
    return SimilarIndex.build(term_lists, table, text_fields, metadata_fields)


def write_index(
    folder: str | Path,
    tickets,
    text_fields: Sequence[str],
    metadata_fields: Sequence[str],
    tokens: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build the index of ``tickets`` into a bundle folder; return its manifest entry."""
    return build_index(tickets, text_fields, metadata_fields, tokens).save(folder)


def load_index(
    folder: str | Path, manifest: MappingType[str, Any]
) -> SimilarIndex | None:
    """Load a bundle's index, or return None for a bundle built without one."""
    entry = manifest.get("similar")
    return SimilarIndex.load(folder, entry) if entry else None


# Recurrence over a table of tickets -----------------------------------------------


RECURRENCE_COLUMNS = ["first_id", "repeat_id", "system", "days_apart", "similarity"]


def find_recurrences(
    tickets,
    text_fields: Sequence[str] = TEXT_FIELDS,
    metadata_fields: Sequence[str] = METADATA_FIELDS,
    window_days: float = RECURRENCE_WINDOW_DAYS,
    threshold: float = RECURRENCE_THRESHOLD,
):
    """Apply the recurrence rule of :meth:`SimilarIndex.search` to a table of tickets.

    Each ticket is compared with the closed tickets of the same table, as a
    new ticket is compared with the index at scoring time. The vectors equal
    a bundle's when ``text_fields`` and ``metadata_fields`` are those of its
    manifest entry (``manifest["similar"]``); the defaults are the canonical
    text and metadata fields.

    Returns a DataFrame with columns ``first_id`` (the closed ticket),
    ``repeat_id``, ``system``, ``days_apart`` (from the first one's closing to
    the repeat's creation, negative while it was open) and ``similarity``, one
    row per repeating ticket, in the table's order.
    """
    import pandas as pd

    fields = [f for f in text_fields if f in tickets]
    index = build_index(tickets, fields, metadata_fields)
    records = tickets.to_dict("records")
    found = index.search_terms(
        [index.ticket_terms(r) for r in records],
        0,
        [to_seconds(r.get("created_at")) for r in records],
        [r.get("system") for r in records],
        [r.get("ticket_id") for r in records],
        window_days=window_days,
        threshold=threshold,
    )
    position = {}
    for i, record in enumerate(records):
        position.setdefault(str(record.get("ticket_id")), i)
    created = {
        key: to_seconds(records[i].get("created_at")) for key, i in position.items()
    }
    rows = []
    for i, (record, match) in enumerate(zip(records, found)):
        repeat = match.recurrence
        if repeat is None:
            continue
        # Two records of one fault created at the same time would each repeat the
        # other. Only the later one in table order counts as the repeat.
        own_created = to_seconds(record.get("created_at"))
        if (
            created.get(repeat.ticket_id) == own_created
            and position[repeat.ticket_id] > i
        ):
            continue
        rows.append(
            (
                repeat.ticket_id,
                str(record.get("ticket_id")),
                categorical_value(record.get("system")),
                repeat.days_since_closed,
                repeat.similarity,
            )
        )
    return pd.DataFrame(rows, columns=RECURRENCE_COLUMNS)


__all__ = [
    "DEFAULT_K",
    "EXCERPT_CHARS",
    "INDEX_FILES",
    "MAX_INDEX_TICKETS",
    "RECURRENCE_THRESHOLD",
    "RECURRENCE_WINDOW_DAYS",
    "Neighbourhood",
    "Recurrence",
    "SimilarIndex",
    "SimilarTicket",
    "build_index",
    "closed_positions",
    "closed_ticket_table",
    "excerpt",
    "find_recurrences",
    "load_index",
    "metadata_terms",
    "text_terms",
    "to_seconds",
    "write_index",
]
