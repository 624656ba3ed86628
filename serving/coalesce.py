"""Score single-ticket requests that arrive together in one scorer call.

Each scorer call costs a fixed part (building the ONNX feeds, one graph run
per target, Python overhead) beside the per-ticket part, so ten tickets in one
call cost much less than ten calls. :class:`Coalescer` never waits to fill a
batch: when a scoring thread is free, a request is scored at once. Requests
that arrive while every scoring thread is busy queue up and go together into
the next call, so batches grow only under load, up to ``max_batch`` tickets.

Only tickets for the same model and the same ``include`` parts share a call,
so a request always finishes on the model it took when it started.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .state import LoadedModel

logger = logging.getLogger(__name__)

# Scores records with a model in a worker thread: (model, records, include) ->
# an awaitable (a coroutine or a future) of their answers, in order.
ScoreCall = Callable[[LoadedModel, list[dict[str, Any]], Sequence[str]], Any]


@dataclass
class _Pending:
    model: LoadedModel
    include: tuple[str, ...]
    record: dict[str, Any]
    future: asyncio.Future


class Coalescer:
    """Queue of single-ticket score requests, drained by up to ``slots`` calls at once.

    All its state is touched only on the event loop thread, so it needs no lock.
    """

    def __init__(self, score: ScoreCall, slots: int, max_batch: int = 32) -> None:
        self._score = score
        self._slots = slots
        self.max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._running = 0
        # The event loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task] = set()
        self.batch_sizes: Callable[[int], None] | None = None
        """Called with the size of every call, for metrics."""

    async def score(
        self, model: LoadedModel, record: dict[str, Any], include: Sequence[str]
    ) -> dict[str, Any]:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(model, tuple(include), record, future))
        if self._running < self._slots:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take_batch(self) -> list[_Pending]:
        """Take the oldest request and the queued ones that can share its call."""
        first = self._queue.popleft()
        batch, rest = [first], deque()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.model is first.model and item.include == first.include:
                batch.append(item)
            else:
                rest.append(item)
        self._queue.extendleft(reversed(rest))
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take_batch()
                if self.batch_sizes is not None:
                    self.batch_sizes(len(batch))
                await self._run(batch)
        finally:
            self._running -= 1

    async def _run(self, batch: list[_Pending]) -> None:
        first = batch[0]
        try:
            answers = await self._score(
                first.model, [p.record for p in batch], first.include
            )
        except Exception as exc:
            if len(batch) == 1:
                _settle(first.future, exception=exc)
                return
            # Score each ticket alone, so that a ticket that breaks the scorer
            # fails only its own request.
            logger.warning(
                "a coalesced call of %d tickets failed; scoring them one by one",
                len(batch),
            )
            for pending in batch:
                await self._run([pending])
            return
        for pending, answer in zip(batch, answers):
            _settle(pending.future, result=answer)


def _settle(
    future: asyncio.Future, result: Any = None, exception: BaseException | None = None
) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


__all__ = ["Coalescer"]
