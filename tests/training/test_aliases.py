"""Promotion and rollback of registry aliases, on a real MLflow store."""

from __future__ import annotations

import getpass
import uuid

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from training.aliases import REPLACED_VERSION, AliasError, promote, rollback
from training.cli import main
from training.registry import CHAMPION, PREVIOUS, alias_version


@pytest.fixture
def client(tracking_dir) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    return MlflowClient()


@pytest.fixture
def model(client, tmp_path) -> str:
    """A registered model with versions 1 to 4 and version 1 as champion."""
    name = f"aliases-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(4):
        client.create_model_version(name, source=str(tmp_path))
    client.set_registered_model_alias(name, CHAMPION, "1")
    return name


def aliases(client: MlflowClient, name: str) -> tuple[str | None, str | None]:
    return alias_version(client, name, CHAMPION), alias_version(client, name, PREVIOUS)


def test_promote_moves_champion_and_previous(client, model):
    change = promote(model, "3", action="promote: test", client=client)
    assert change.champion == "3"
    assert change.previous == "1"
    assert change.replaced == "1"
    assert aliases(client, model) == ("3", "1")


def test_promote_tags_who_and_when(client, model):
    promote(model, "2", action="promote: test", client=client)
    new = client.get_model_version(model, "2").tags
    old = client.get_model_version(model, "1").tags
    assert new["champion.set_by"] == getpass.getuser()
    assert new["champion.set_at"][:2] == "20"
    assert new["champion.action"] == "promote: test"
    assert new[REPLACED_VERSION] == "1"
    assert old["previous.set_by"] == getpass.getuser()
    assert old["previous.action"] == "promote: test (replaced by version 2)"


def test_rollback_restores_previous(client, model):
    promote(model, "2", client=client)
    change = rollback(model, action="rollback: test", client=client)
    assert change.champion == "1"
    assert change.replaced == "2"
    assert change.previous is None
    assert aliases(client, model) == ("1", None)
    demoted = client.get_model_version(model, "2").tags
    assert demoted["demoted_by"] == getpass.getuser()
    assert demoted["demoted_action"] == "rollback: test (to version 1)"
    restored = client.get_model_version(model, "1").tags
    assert restored["champion.action"] == "rollback: test (from version 2)"


def test_second_rollback_goes_further_back(client, model):
    promote(model, "2", client=client)
    promote(model, "3", client=client)
    promote(model, "4", client=client)
    assert aliases(client, model) == ("4", "3")
    rollback(model, client=client)
    assert aliases(client, model) == ("3", "2")
    rollback(model, client=client)
    assert aliases(client, model) == ("2", "1")
    rollback(model, client=client)
    assert aliases(client, model) == ("1", None)


def test_rollback_without_previous_raises(client, model):
    with pytest.raises(AliasError, match=r"no version with the alias previous.*triage promote"):
        rollback(model, client=client)
    assert aliases(client, model) == ("1", None)


def test_promote_unknown_version_lists_versions(client, model):
    with pytest.raises(AliasError, match=r"version 9 of .* not found; registered versions: 1, 2, 3, 4"):
        promote(model, "9", client=client)


def test_promote_current_champion_raises(client, model):
    with pytest.raises(AliasError, match="already the champion"):
        promote(model, "1", client=client)


def test_promote_unknown_model_raises(client):
    with pytest.raises(AliasError, match=r"registered model 'no-such-model' not found"):
        promote("no-such-model", "1", client=client)


def test_cli_promote_and_rollback(client, model, tracking_dir):
    runner = CliRunner()
    uri = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    promoted = runner.invoke(
        main, ["promote", "3", "--model-name", model, "--reason", "checked by hand",
               "--tracking-uri", uri],
    )
    assert promoted.exit_code == 0, promoted.output
    assert f"{model}: champion is version 3; previous is version 1" in promoted.output
    tags = client.get_model_version(model, "3").tags
    assert tags["champion.action"] == "promote: checked by hand"

    rolled = runner.invoke(main, ["rollback", "--model-name", model, "--tracking-uri", uri])
    assert rolled.exit_code == 0, rolled.output
    assert f"{model}: champion rolled back from version 3 to 1; previous is version none" in (
        rolled.output
    )
    assert aliases(client, model) == ("1", None)


def test_cli_rollback_error_exits_nonzero(model, tracking_dir):
    uri = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    result = CliRunner().invoke(main, ["rollback", "--model-name", model, "--tracking-uri", uri])
    assert result.exit_code == 1
    assert "nothing to roll back to" in result.output


@pytest.mark.parametrize("spelling", ["01", " 1", "１"])
def test_cli_promote_reads_version_as_number(client, model, tracking_dir, spelling):
    uri = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    result = CliRunner().invoke(
        main, ["promote", spelling, "--model-name", model, "--tracking-uri", uri]
    )
    assert result.exit_code == 1
    assert "already the champion" in result.output
    assert str(client.get_model_version_by_alias(model, CHAMPION).version) == "1"


@pytest.mark.parametrize("version", ["x", "0", "-2"])
def test_cli_promote_rejects_bad_version(model, tracking_dir, version):
    uri = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    result = CliRunner().invoke(
        main, ["promote", "--model-name", model, "--tracking-uri", uri, "--", version]
    )
    assert result.exit_code == 2
    assert "VERSION" in result.output
