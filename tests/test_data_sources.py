"""Data root, md5 checks, verified downloads (no real network) and idx parsing."""
from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pyromm.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, IdxFormatError, load_mnist, read_idx
from pyromm.data.paths import ChecksumError, data_root, ensure_file, md5sum, verify_md5


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("PYROMM_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("PYROMM_DATA")
    assert data_root() == Path("~/.cache/pyromm").expanduser()


def test_md5_and_checksum_error(tmp_path):
    path = tmp_path / "blob.bin"
    content = b"pyromm" * 1000
    path.write_bytes(content)
    assert md5sum(path) == _md5(content)
    verify_md5(path, _md5(content).upper())
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        verify_md5(path, wrong)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message and wrong in message and _md5(content) in message


def test_ensure_file_existing_is_verified(tmp_path, no_network):
    path = tmp_path / "present.bin"
    path.write_bytes(b"abc")
    assert ensure_file(path, _md5(b"abc"), ["http://example.invalid/present.bin"]) == path
    with pytest.raises(ChecksumError):
        ensure_file(path, "1" * 32, ["http://example.invalid/present.bin"])
    assert no_network == []


def test_missing_file_without_network(tmp_path, no_network):
    path = tmp_path / "sub" / "missing.gz"
    urls = ["http://a.invalid/missing.gz", "https://b.invalid/missing.gz"]
    with pytest.raises(FileNotFoundError) as info:
        ensure_file(path, "2" * 32, urls)
    message = str(info.value)
    assert str(path) in message and all(u in message for u in urls) and "PYROMM_DATA" in message
    assert no_network == urls
    assert not path.exists() and not list(path.parent.glob("*.part"))


def test_download_is_verified_and_falls_back(tmp_path, monkeypatch):
    good = b"the real file"
    served = {"http://corrupt.invalid/f": b"corrupted", "http://good.invalid/f": good}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(served[url]))
    path = tmp_path / "f"
    ensure_file(path, _md5(good), list(served))
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_corrupt_download_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"corrupted"))
    path = tmp_path / "f"
    with pytest.raises(FileNotFoundError, match="ChecksumError"):
        ensure_file(path, _md5(b"expected"), ["http://corrupt.invalid/f"])
    assert list(tmp_path.iterdir()) == []


def test_read_idx_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    (tmp_path / "images.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "labels").write_bytes(_idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz", IMAGES_MAGIC), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels", LABELS_MAGIC), labels)
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(tmp_path / "labels", IMAGES_MAGIC)


def test_read_idx_truncated(tmp_path):
    raw = _idx_bytes(np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8))
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(IdxFormatError, match="truncated") as info:
        read_idx(short)
    assert str(short) in str(info.value)
    cut = tmp_path / "cut.gz"
    compressed = gzip.compress(raw)
    cut.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(IdxFormatError, match="truncated") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    header = tmp_path / "header"
    header.write_bytes(raw[:9])
    with pytest.raises(IdxFormatError, match="header"):
        read_idx(header)


def test_load_mnist_missing_offline(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz") as info:
        load_mnist(tmp_path, "train")
    assert "yann.lecun.com" in str(info.value) and "ossci-datasets" in str(info.value)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "validation")


def test_load_mnist_shared(require_shared_file):
    root = require_shared_file("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
    images, labels = load_mnist(root, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

