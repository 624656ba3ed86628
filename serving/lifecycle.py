"""Follow the model source and swap in new models that pass verification.

A source is a registry URI (``models:/<name>@<alias>`` follows an alias,
``models:/<name>/<version>`` pins a version) or a bundle folder. A check reads which
model the source points to now and compares it with the loaded model: the
registry version for an alias, the SHA-256 of ``manifest.json`` for a folder.
Moving the alias in either direction (a promotion or a rollback) therefore
changes what the service loads. A new model is loaded in full, its file hashes
verified and its self-test run before it replaces the old one, which keeps
serving whenever any of that fails.

When the source still points to the loaded model, a check verifies the source's
files against that model's manifest. A file changed after loading gives the
outcome ``rejected`` naming the file, and the model loaded into memory keeps
serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from models.bundle import (
    MANIFEST,
    BundleError,
    BundleVerifier,
    find_bundle,
    read_manifest,
)
from models.heap import freeze_loaded_objects

from .metrics import ServiceMetrics
from .state import LoadedModel, ModelState, ReloadReport, load_bundle

logger = logging.getLogger(__name__)

# Log a failing check on the first failure and then on every n-th repeat, so that
# a registry outage gives a few lines, not one per poll.
REPEAT_LOG_EVERY = 20


@dataclass(frozen=True)
class SourceVersion:
    """The model a source points to at the time of a check."""

    identity: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None = None


class ModelSource:
    """A source of models: ``current`` names its model, ``load`` loads it."""

    description: str

    def current(self) -> SourceVersion:
        raise NotImplementedError

    def load(self, ref: SourceVersion, threads: int) -> LoadedModel:
        raise NotImplementedError

    def verify(self, ref: SourceVersion, *, download: bool) -> None:
        """Raise BundleError if the files of ``ref`` no longer match its manifest.

        ``download`` lets a source whose files are not on a local disk download
        them for the check; without it such a source skips the check.
        """
        raise NotImplementedError


class FolderSource(ModelSource):
    """A bundle folder on disk; a new export into it is a new model."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.description = str(self.folder)
        self._verifier = BundleVerifier()

    def current(self) -> SourceVersion:
        bundle = find_bundle(self.folder)
        digest = hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()
        return SourceVersion(
            identity=f"sha256:{digest}", name=None, version=None, alias=None
        )

    def load(self, ref: SourceVersion, threads: int) -> LoadedModel:
        return load_bundle(
            find_bundle(self.folder),
            threads,
            source=self.description,
            identity=ref.identity,
        )

    def verify(self, ref: SourceVersion, *, download: bool) -> None:
        self._verifier.verify(find_bundle(self.folder))


class RegistrySource(ModelSource):
    """A registered model in MLflow, by alias or by version."""

    def __init__(self, uri: str) -> None:
        from models.registry_io import parse_model_uri

        self.uri = uri
        self.description = uri
        self.name, self.alias, self.version = parse_model_uri(uri)
        self._client = None
        self._verifier = BundleVerifier()
        self._local_bundles: dict[str, Path] = {}
        # MLflow draws a progress bar per download on standard error; a service
        # logs instead.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def _registry(self):
        if self._client is None:
            from mlflow import MlflowClient

            from models.registry_io import tracking_uri

            self._client = MlflowClient(tracking_uri=tracking_uri())
        return self._client

    def current(self) -> SourceVersion:
        client = self._registry()
        if self.alias:
            found = client.get_model_version_by_alias(self.name, self.alias)
        else:
            found = client.get_model_version(self.name, self.version)
        version = str(found.version)
        return SourceVersion(
            identity=f"{self.name}/{version}",
            name=self.name,
            version=version,
            alias=self.alias,
            run_id=found.run_id,
        )

    def load(self, ref: SourceVersion, threads: int) -> LoadedModel:
        from models.registry_io import download_bundle

        root = Path(tempfile.mkdtemp(prefix="triage-serve-"))
        try:
            folder = download_bundle(f"models:/{ref.name}/{ref.version}", root)
            return load_bundle(
                folder,
                threads,
                name=ref.name,
                version=ref.version,
                alias=ref.alias,
                source=self.uri,
                identity=ref.identity,
                run_id=ref.run_id,
                download_root=root,
            )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def verify(self, ref: SourceVersion, *, download: bool) -> None:
        folder = self._local_bundle(ref)
        if folder is not None:
            self._verifier.verify(folder)
            return
        if not download:
            # NOTE: polling does not verify a remote artifact store, because that
            # would download the whole bundle on every poll.
            return
        from models.registry_io import download_bundle

        with tempfile.TemporaryDirectory(prefix="triage-verify-") as root:
            read_manifest(download_bundle(f"models:/{ref.name}/{ref.version}", root))

    def _local_bundle(self, ref: SourceVersion) -> Path | None:
        """Return the bundle folder of ``ref`` in a local artifact store, else None."""
        folder = self._local_bundles.get(ref.identity)
        if folder is None:
            uri = self._registry().get_model_version_download_uri(ref.name, ref.version)
            parsed = urlparse(uri)
            if parsed.scheme not in ("file", "") or parsed.netloc not in ("", "localhost"):
                return None
            folder = find_bundle(url2pathname(parsed.path))
            self._local_bundles = {ref.identity: folder}
        return folder


def source_for(model_uri: str, bundle_dir: str | None) -> ModelSource:
    return FolderSource(bundle_dir) if bundle_dir else RegistrySource(model_uri)


class ModelWatcher:
    """Check the source for a new model and swap it in; one check runs at a time."""

    def __init__(
        self,
        state: ModelState,
        source: ModelSource,
        threads: int,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.state = state
        self.source = source
        self.threads = threads
        self.metrics = metrics
        self._lock = threading.Lock()
        self._rejected: dict[str, str] = {}
        self._failures = 0
        self._disk_error: str | None = None
        self._disk_error_repeats = 0

    def check(
        self,
        *,
        retry_rejected: bool = False,
        force: bool = False,
        verify_remote: bool = False,
    ) -> ReloadReport:
        """Load the source's model if it differs from the loaded one.

        A version that was rejected once is skipped on later checks unless
        ``retry_rejected`` is set; ``force`` reloads even an unchanged version.
        An unchanged version has its files verified, and ``verify_remote`` lets
        a registry source download them from a remote artifact store for that.
        """
        with self._lock:
            report = self._check(
                retry_rejected=retry_rejected, force=force, verify_remote=verify_remote
            )
            self.state.last_report = report
        if self.metrics is not None:
            self.metrics.reloads.labels(report.outcome).inc()
        return report

    def _check(
        self, *, retry_rejected: bool, force: bool, verify_remote: bool
    ) -> ReloadReport:
        now = time.time()
        try:
            ref = self.source.current()
        except Exception as exc:  # registry unreachable, alias deleted, folder gone
            return self._failed(
                f"cannot resolve {self.source.description}: {_reason(exc)}", now
            )
        if self._failures:
            logger.info(
                "%s is reachable again after %d failed checks",
                self.source.description,
                self._failures,
            )
            self._failures = 0

        loaded = self.state.model
        if not force and loaded is not None and loaded.identity == ref.identity:
            return self._verify_loaded(loaded, ref, now, verify_remote)
        if not (force or retry_rejected) and ref.identity in self._rejected:
            return ReloadReport(
                "rejected", now, version=ref.version, error=self._rejected[ref.identity]
            )

        logger.info(
            "loading %s (%s), currently serving %s",
            ref.identity,
            self.source.description,
            loaded.identity if loaded else "nothing",
        )
        try:
            model = self.source.load(ref, self.threads)
        except BundleError as exc:
            self._rejected[ref.identity] = str(exc)
            logger.error(
                "rejected model %s: %s; still serving %s",
                ref.identity,
                exc,
                loaded.identity if loaded else "nothing",
            )
            return ReloadReport("rejected", now, version=ref.version, error=str(exc))
        except Exception as exc:  # download or I/O failure: worth retrying later
            return self._failed(
                f"cannot load {ref.identity}: {_reason(exc)}", now, ref.version
            )

        self._rejected.pop(ref.identity, None)
        self._disk_error = None
        self._install(model, ref)
        if loaded is not None:
            loaded.discard_download()
        logger.info(
            "now serving %s, replacing %s",
            ref.identity,
            loaded.identity if loaded else "nothing",
        )
        return ReloadReport("loaded", now, version=ref.version)

    def _verify_loaded(
        self, loaded: LoadedModel, ref: SourceVersion, now: float, download: bool
    ) -> ReloadReport:
        """Report ``unchanged`` if the source's files of the loaded model still match
        its manifest, else ``rejected`` with the file that differs."""
        try:
            self.source.verify(ref, download=download)
        except BundleError as exc:
            message = (
                f"the bundle of {ref.identity} in {self.source.description} fails "
                f"verification: {exc}. The loaded model keeps serving from memory. "
                "Restore the bundle or publish a new one"
            )
            self._log_disk_error(message)
            return ReloadReport("rejected", now, version=ref.version, error=message)
        except Exception as exc:  # unreadable file, registry or download failure
            return self._failed(
                f"cannot verify {ref.identity}: {_reason(exc)}", now, ref.version
            )
        if self._disk_error is not None:
            logger.info(
                "the bundle of %s in %s matches its manifest again",
                ref.identity,
                self.source.description,
            )
            self._disk_error = None
        return ReloadReport("unchanged", now, version=ref.version)

    def _log_disk_error(self, message: str) -> None:
        if message != self._disk_error:
            self._disk_error = message
            self._disk_error_repeats = 0
        self._disk_error_repeats += 1
        repeats = self._disk_error_repeats
        if repeats == 1 or repeats % REPEAT_LOG_EVERY == 0:
            logger.error(
                "bundle verification failed (%d checks in a row): %s", repeats, message
            )

    def _install(self, model: LoadedModel, ref: SourceVersion) -> None:
        self.state.swap(model)
        # The loaded model lives until the next reload; the collector need not
        # walk it on every full collection.
        freeze_loaded_objects()
        if self.metrics is not None:
            self.metrics.model_loaded(
                model.name, model.version, model.alias, model.loaded_at
            )

    def _failed(
        self, message: str, now: float, version: str | None = None
    ) -> ReloadReport:
        self._failures += 1
        if self._failures == 1 or self._failures % REPEAT_LOG_EVERY == 0:
            logger.warning(
                "model check failed (%d in a row): %s", self._failures, message
            )
        return ReloadReport("failed", now, version=version, error=message)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "FolderSource",
    "ModelSource",
    "ModelWatcher",
    "RegistrySource",
    "SourceVersion",
    "source_for",
]
