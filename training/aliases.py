"""Promote a version to ``champion`` and roll back to ``previous``.

Every move is recorded as tags on the versions involved. The version that
receives an alias gets ``<alias>.set_by``, ``<alias>.set_at`` and
``<alias>.action``. A new champion gets ``replaced_version``, the champion it
replaced. A champion removed by a rollback gets ``demoted_by``, ``demoted_at``
and ``demoted_action``. Because of ``replaced_version``, a second rollback goes
one step further back instead of returning to the version just rolled back.
"""

from __future__ import annotations

import getpass
import logging
import time
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from .registry import CHAMPION, PREVIOUS, alias_version, record_alias

logger = logging.getLogger(__name__)

REPLACED_VERSION = "replaced_version"


class AliasError(RuntimeError):
    """An alias cannot be moved: unknown model or version, or nothing to roll back to."""


@dataclass(frozen=True)
class AliasChange:
    """Targets of ``champion`` and ``previous`` after a promotion or rollback."""

    model_name: str
    champion: str
    previous: str | None
    replaced: str | None
    """The champion before the change, if there was one."""


def promote(
    model_name: str,
    version: str,
    action: str = "promote",
    client: MlflowClient | None = None,
) -> AliasChange:
    """Make ``version`` the champion; the champion it replaces becomes ``previous``."""
    client = client or MlflowClient()
    version = str(version)
    _require_version(client, model_name, version)
    current = alias_version(client, model_name, CHAMPION)
    if current == version:
        raise AliasError(
            f"version {version} of {model_name} is already the champion; nothing to promote"
        )
    record_alias(client, model_name, CHAMPION, version, action)
    previous = None
    if current is not None:
        client.set_model_version_tag(model_name, version, REPLACED_VERSION, current)
        record_alias(
            client,
            model_name,
            PREVIOUS,
            current,
            f"{action} (replaced by version {version})",
        )
        previous = current
    logger.info(
        "%s: champion is now version %s (was %s)",
        model_name,
        version,
        current or "none",
    )
    return AliasChange(
        model_name, champion=version, previous=previous, replaced=current
    )


def rollback(
    model_name: str, action: str = "rollback", client: MlflowClient | None = None
) -> AliasChange:
    """Move ``champion`` back to the ``previous`` version.

    ``previous`` then moves to the champion that the restored version had
    replaced, or is removed when there was none.
    """
    client = client or MlflowClient()
    _require_model(client, model_name)
    current = alias_version(client, model_name, CHAMPION)
    target = alias_version(client, model_name, PREVIOUS)
    if target is None:
        raise AliasError(
            f"{model_name} has no version with the alias {PREVIOUS}, so there is nothing to "
            f"roll back to; promote a version explicitly with `triage promote VERSION`"
        )
    if current is not None:
        _record_demotion(client, model_name, current, f"{action} (to version {target})")
    record_alias(
        client,
        model_name,
        CHAMPION,
        target,
        f"{action} (from version {current or 'none'})",
    )
    earlier = client.get_model_version(model_name, target).tags.get(REPLACED_VERSION)
    if earlier and earlier != target and _version_exists(client, model_name, earlier):
        record_alias(
            client,
            model_name,
            PREVIOUS,
            earlier,
            f"{action} (one step before version {target})",
        )
    else:
        client.delete_registered_model_alias(model_name, PREVIOUS)
        earlier = None
    logger.info(
        "%s: rolled back champion from version %s to %s", model_name, current, target
    )
    return AliasChange(model_name, champion=target, previous=earlier, replaced=current)


def _record_demotion(
    client: MlflowClient, model_name: str, version: str, action: str
) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    client.set_model_version_tag(model_name, version, "demoted_by", getpass.getuser())
    client.set_model_version_tag(model_name, version, "demoted_at", stamp)
    client.set_model_version_tag(model_name, version, "demoted_action", action)


def _require_model(client: MlflowClient, model_name: str) -> None:
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise AliasError(
            f"registered model {model_name!r} not found; registered models: "
            f"{', '.join(names) or 'none'}"
        ) from None


def _version_exists(client: MlflowClient, model_name: str, version: str) -> bool:
    try:
        client.get_model_version(model_name, version)
    except MlflowException:
        return False
    return True


def _require_version(client: MlflowClient, model_name: str, version: str) -> None:
    _require_model(client, model_name)
    if not _version_exists(client, model_name, version):
        versions = sorted(
            (v.version for v in client.search_model_versions(f"name = '{model_name}'")),
            key=int,
        )
        raise AliasError(
            f"version {version} of {model_name} not found; registered versions: "
            f"{', '.join(map(str, versions)) or 'none'}"
        )


__all__ = ["AliasChange", "AliasError", "REPLACED_VERSION", "promote", "rollback"]
