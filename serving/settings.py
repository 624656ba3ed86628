"""Service settings, read from ``TRIAGE_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

import os
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TRIAGE_"


def available_cores() -> int:
    """Number of CPU cores this process may run on (its affinity mask, not the host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS
        return os.cpu_count() or 1


def read_key_file(path: Path) -> list[SecretStr]:
    """Read API keys from a file, one key a line, skipping blanks and ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from None
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(SecretStr(line))
    return keys


class Settings(BaseSettings):
    """Settings of the scoring service, each from the variable ``TRIAGE_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", protected_namespaces=()
    )

    # Model source and lifecycle.
    model_uri: str = "models:/ticket-triage@champion"
    """Registry URI of the model to serve; ignored when ``bundle_dir`` is set."""
    bundle_dir: str | None = None
    """Serve this bundle folder instead of a registry alias."""
    poll_seconds: float = Field(30.0, ge=0)
    """Seconds between checks of the registry alias (or the bundle folder); 0 turns
    polling off, so only ``POST /v1/admin/reload`` loads a new model."""

    # Threads. A process runs up to ``scoring_threads`` scoring calls at once and
    # each onnxruntime session run uses ``onnx_threads`` threads, so a machine runs
    # about workers x scoring_threads x onnx_threads threads of CPU work.
    workers: int = Field(1, ge=1)
    """Worker processes serving the app; ``triage serve --workers`` sets it."""
    scoring_threads: int | None = Field(None, ge=1)
    """Threads that run scoring off the event loop; default: cores / workers."""
    onnx_threads: int = Field(1, ge=1)
    """onnxruntime intra-op threads per session run. One suits single tickets,
    which are too small to split; raise it for large batches on idle cores."""

    # Input limits.
    max_description_chars: int = Field(5000, ge=1)
    """Maximum characters in a ticket's description."""
    max_batch: int = Field(1000, ge=1)
    """Maximum tickets in one ``POST /v1/score/batch`` call."""
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Maximum size of a JSON request body in bytes. A full batch of 1,000 tickets of
    5,000 Chinese characters each is about 15 MB as raw UTF-8."""

    # Authentication.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Keys accepted on every closed endpoint, comma-separated."""
    api_keys_file: Path | None = None
    """File of further API keys, one a line."""
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Keys accepted on ``/v1/admin/*`` (and on every other closed endpoint)."""
    admin_keys_file: Path | None = None
    """File of further admin keys, one a line."""
    public_docs: bool = False
    """Serve ``/docs``, its files and ``/openapi.json`` without a key even when keys
    are set."""

    log_level: str = "INFO"
    """Level of the service's own log lines when nothing else configured logging."""

    # Feedback store.
    feedback_db_url: str = "sqlite:///triage-feedback.db"
    """SQLAlchemy URL of the feedback and scored-ticket store, e.g.
    ``postgresql+psycopg://user@host/db``; a relative SQLite path is relative to the
    working directory."""
    log_scored_tickets: bool = True
    """Record every scored ticket (id, time, model, answer, latency) in the store."""
    store_ticket_text: bool = False
    """Also record each scored ticket's title and description in that log."""

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            keys = [part.strip() for part in value.split(",") if part.strip()]
            if value.strip() and not keys:
                raise ValueError(
                    "the key list is set but contains no key; give comma-separated keys "
                    "or leave the variable unset"
                )
            return keys
        return value

    @property
    def scoring_thread_count(self) -> int:
        if self.scoring_threads is not None:
            return self.scoring_threads
        return max(1, available_cores() // self.workers)

    def client_keys(self) -> list[SecretStr]:
        """Return the keys accepted on closed endpoints other than the admin ones."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            keys += read_key_file(self.api_keys_file)
        return keys

    def all_admin_keys(self) -> list[SecretStr]:
        keys = list(self.admin_keys)
        if self.admin_keys_file is not None:
            keys += read_key_file(self.admin_keys_file)
        return keys


class SettingsError(ValueError):
    """Invalid settings, with each invalid variable named in the message."""


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_holds_secret(argument) for argument in typing.get_args(annotation))


def describe_invalid_settings(exc: ValidationError) -> str:
    """Return one line that names each invalid ``TRIAGE_*`` variable and the reason.

    The input value is quoted only for settings that contain no secret, so API
    keys never appear in the message.
    """
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        reason = error["msg"].removeprefix("Value error, ")
        model_field = Settings.model_fields.get(field)
        secret = model_field is None or _holds_secret(model_field.annotation)
        value = error.get("input")
        if not secret and isinstance(value, (str, int, float)):
            reason += f", got {str(value)[:60]!r}"
        problems.append(f"{ENV_PREFIX}{field.upper()}: {reason}")
    return "invalid settings: " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings, or raise :class:`SettingsError` naming each invalid one."""
    try:
        return Settings()
    except ValidationError as exc:
        # from None: pydantic's own message quotes every input, API keys too.
        raise SettingsError(describe_invalid_settings(exc)) from None
