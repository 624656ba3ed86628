"""The model bundle: ONNX graphs, jieba dictionary, taxonomy and a manifest.

A bundle is a folder::

    manifest.json        targets, labels, feature fields, metrics, file hashes
    targets/<name>.onnx  one graph per target
    it_ops.txt           the jieba domain dictionary used in training
    taxonomy.toml        categories, causes and measures

Reading a bundle verifies every file against the SHA-256 in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class TargetEntry:
    """One target of a bundle as recorded in its manifest."""

    name: str
    kind: str
    field: str
    file: str
    labels: list[Any] = field(default_factory=list)
    transform: str | None = None
    temperature: float = 1.0
    threshold: float | None = None
    class_thresholds: dict[str, float] = field(default_factory=dict)
    limit_hours: float | None = None
    limits: dict[str, float] | None = None
    limit_by: str | None = None
    residual_scale: float | None = None
    mode: str = "intake"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TargetEntry":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``folder`` into the manifest and write it."""
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
    (folder / MANIFEST).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
    )
    return manifest


def find_bundle(path: str | Path) -> Path:
    """Return the bundle folder at ``path`` or inside it (an MLflow model download)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    found = sorted(path.rglob(MANIFEST)) if path.is_dir() else []
    if not found:
        raise BundleError(f"no {MANIFEST} found in {path}; expected a model bundle folder")
    if len(found) > 1:
        listed = ", ".join(str(f.parent) for f in found[:5])
        raise BundleError(
            f"{path} contains {len(found)} bundles ({listed}); pass the folder of one of them"
        )
    logger.info("using the bundle in %s", found[0].parent)
    return found[0].parent


def read_manifest(folder: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a bundle's manifest; with ``verify`` check every file's hash."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle {folder} has no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle manifest {path} is not valid JSON: {exc}") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {folder} has format version {version!r}; this release reads "
            f"version {FORMAT_VERSION}"
        )
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(
    folder: Path, manifest: dict[str, Any], hash_file: Callable[[Path], str] = sha256_file
) -> None:
    """Raise BundleError naming the first file listed in ``manifest`` that is missing
    from ``folder`` or whose hash differs from the manifest's."""
    for name, expected in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"bundle {folder} is missing {name}, listed in its manifest")
        actual = hash_file(file)
        if actual != expected:
            raise BundleError(
                f"bundle file {name} has SHA-256 {actual[:12]}..., the manifest records "
                f"{expected[:12]}...; the bundle was changed after export"
            )


class BundleVerifier:
    """Verifier of a bundle folder that rehashes only the files changed since its
    last check.

    A file is hashed again only when its size, inode, modification time or
    status-change time differ from its last hash. Writing a file changes its
    status-change time, which ``touch`` cannot set back. The kernel updates
    file times once per clock tick, so a file changed less than
    ``settle_seconds`` before its hash is hashed again on the next check.
    """

    def __init__(self, settle_seconds: float = 2.0) -> None:
        self.settle_ns = int(settle_seconds * 1e9)
        self._hashes: dict[Path, tuple[tuple[int, ...], str]] = {}

    def verify(self, folder: Path) -> dict[str, Any]:
        """Read the manifest in ``folder``, verify its files and return it.

        Raises BundleError when the manifest is unreadable or a file is missing
        or changed.
        """
        manifest = read_manifest(folder, verify=False)
        seen: dict[Path, tuple[tuple[int, ...], str]] = {}

        def hash_file(path: Path) -> str:
            info = path.stat()
            key = (
                info.st_dev,
                info.st_ino,
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
            cached = self._hashes.get(path)
            if cached is not None and cached[0] == key:
                seen[path] = cached
                return cached[1]
            digest = sha256_file(path)
            changed_ns = max(info.st_mtime_ns, info.st_ctime_ns)
            if time.time_ns() - changed_ns >= self.settle_ns:
                seen[path] = (key, digest)
            return digest

        try:
            verify_files(folder, manifest, hash_file)
        finally:
            # Keep only the files of this folder, so that the cache stays small.
            self._hashes = seen
        return manifest


def copy_bundle(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return destination


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "BundleError",
    "BundleVerifier",
    "TargetEntry",
    "copy_bundle",
    "find_bundle",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_manifest",
]
