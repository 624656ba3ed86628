"""ASGI entry point for uvicorn: ``serving.main:app``."""

from .app import create_app

app = create_app()
