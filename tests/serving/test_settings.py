"""Invalid settings are named by their TRIAGE_* variables, without secret values."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.settings import SettingsError, get_settings

TRIAGE = Path(sys.executable).with_name("triage")


@pytest.fixture
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_invalid_variable_is_named(monkeypatch, fresh_settings):
    monkeypatch.setenv("TRIAGE_MAX_BATCH", "abc")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    message = str(raised.value)
    assert "TRIAGE_MAX_BATCH: Input should be a valid integer" in message
    assert "got 'abc'" in message
    assert "\n" not in message


def test_key_values_are_not_quoted(monkeypatch, fresh_settings):
    monkeypatch.setenv("TRIAGE_API_KEYS", " , ")
    monkeypatch.setenv("TRIAGE_POLL_SECONDS", "-1")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    message = str(raised.value)
    assert "TRIAGE_API_KEYS: the key list is set but contains no key" in message
    assert "' , '" not in message
    assert "TRIAGE_POLL_SECONDS: Input should be greater than or equal to 0" in message
    assert "got '-1'" in message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_names_invalid_setting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRIAGE_MAX_BATCH": "abc"}
    port = str(free_port())
    result = subprocess.run(
        [str(TRIAGE), "serve", "--host", "127.0.0.1", "--port", port],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "TRIAGE_MAX_BATCH: Input should be a valid integer" in result.stderr
    assert "got 'abc'" in result.stderr
    assert "Traceback" not in result.stderr
