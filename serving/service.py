"""The service state that routes share: settings, model, metrics, scoring threads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import HTTPException, Request

from .auth import KeyRing
from .coalesce import Coalescer
from .lifecycle import ModelWatcher
from .metrics import ServiceMetrics
from .settings import Settings
from .state import LoadedModel, ModelState

Result = TypeVar("Result")

NO_MODEL = "No model is loaded yet; retry once /readyz reports ready."

# An enricher adds parts to scored answers in place, after the scorer ran and in
# the same scoring thread. It receives the model, the ticket records, their
# answers (same order) and the ``include`` list of the request.
Enricher = Callable[
    [LoadedModel, Sequence[dict[str, Any]], list[dict[str, Any]], Sequence[str]], None
]


@dataclass
class Service:
    settings: Settings
    state: ModelState
    watcher: ModelWatcher
    metrics: ServiceMetrics
    client_keys: KeyRing
    admin_keys: KeyRing
    executor: ThreadPoolExecutor
    enrichers: list[Enricher] = field(default_factory=list)
    coalescer: Coalescer | None = None
    """Scores concurrent single-ticket requests together; set by the app."""

    def require_model(self) -> LoadedModel:
        """Return the loaded model, or raise a 503 while there is none."""
        model = self.state.model
        if model is None:
            raise HTTPException(
                status_code=503, detail=NO_MODEL, headers={"Retry-After": "5"}
            )
        return model

    async def run(
        self, function: Callable[..., Result], *args: Any, **kwargs: Any
    ) -> Result:
        """Run CPU-bound work on the scoring threads, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, functools.partial(function, *args, **kwargs)
        )

    @property
    def auth_enabled(self) -> bool:
        return bool(len(self.client_keys) or len(self.admin_keys))


async def get_service(request: Request) -> Service:
    # async, so that FastAPI calls it in place instead of on a worker thread.
    return request.app.state.service


__all__ = ["NO_MODEL", "Enricher", "Service", "get_service"]
