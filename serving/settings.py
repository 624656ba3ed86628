"""Service settings, read from ``TRIAGE_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    model_uri: str = "models:/ticket-triage@champion"
    """Registry URI of the model to serve; ignored when ``bundle_dir`` is set."""
    bundle_dir: str | None = None
    """Serve this bundle folder instead of a registry alias."""
    onnx_threads: int = 1
    """onnxruntime intra-op threads per worker process."""
    max_description_chars: int = 5000
    max_batch: int = 1000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
