"""Bundle manifests: hashing files and verifying them again after a change."""

from __future__ import annotations

import os

import pytest

import models.bundle as bundle_module
from models.bundle import BundleError, BundleVerifier, write_manifest


@pytest.fixture
def small_bundle(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "category.onnx").write_bytes(b"graph")
    (tmp_path / "taxonomy.toml").write_text("[categories]\n", encoding="utf-8")
    write_manifest(tmp_path, {"name": "small"})
    return tmp_path


@pytest.fixture
def hashed_files(monkeypatch) -> list[str]:
    """Names of the files that sha256_file hashed, in order."""
    hashed: list[str] = []
    original = bundle_module.sha256_file

    def counting(path):
        hashed.append(path.name)
        return original(path)

    monkeypatch.setattr(bundle_module, "sha256_file", counting)
    return hashed


def test_verifier_rehashes_only_changed_files(small_bundle, hashed_files):
    verifier = BundleVerifier(settle_seconds=0)
    verifier.verify(small_bundle)
    assert sorted(hashed_files) == ["category.onnx", "taxonomy.toml"]
    hashed_files.clear()
    verifier.verify(small_bundle)
    assert hashed_files == []

    (small_bundle / "taxonomy.toml").write_text("[causes]\n", encoding="utf-8")
    with pytest.raises(BundleError, match="taxonomy.toml .*changed after export"):
        verifier.verify(small_bundle)
    assert hashed_files == ["taxonomy.toml"]


def test_verifier_rehashes_recent_files(small_bundle, hashed_files):
    verifier = BundleVerifier(settle_seconds=3600)
    verifier.verify(small_bundle)
    hashed_files.clear()
    verifier.verify(small_bundle)
    assert sorted(hashed_files) == ["category.onnx", "taxonomy.toml"]


def test_verifier_sees_same_size_change(small_bundle):
    """A change of the same size within one clock tick, with mtime set back."""
    verifier = BundleVerifier()
    verifier.verify(small_bundle)
    graph = small_bundle / "targets" / "category.onnx"
    info = graph.stat()
    graph.write_bytes(b"GRAPH")
    os.utime(graph, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(BundleError, match="targets/category.onnx"):
        verifier.verify(small_bundle)


def test_verifier_reports_missing_file(small_bundle):
    verifier = BundleVerifier()
    verifier.verify(small_bundle)
    (small_bundle / "taxonomy.toml").unlink()
    with pytest.raises(BundleError, match="missing taxonomy.toml"):
        verifier.verify(small_bundle)
