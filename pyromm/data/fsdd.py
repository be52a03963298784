"""The Free Spoken Digit Dataset (FSDD, Jakobovski et al., CC BY-SA 4.0): md5-checked recordings and their
cached log-mel spectrograms.

The 3,000 recordings ``recordings/{digit}_{speaker}_{index}.wav`` (6 speakers x 10 digits x 50) live under
``<data root>/fsdd/``; their md5s ship with pyromm (``fsdd_md5sums.txt``, ``md5sum -c`` format relative to
``fsdd/``). Spectrograms (:mod:`pyromm.data.audio`) are cached under ``<cache root>/fsdd/`` as uint8
round(255 S), keyed by the md5 of the recordings' md5s, the spectrogram settings and the format version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pyromm.data.audio import SpectrogramSettings, wav_spectrogram
from pyromm.data.paths import cache_root, data_root, ensure_file
from pyromm.files import atomic_open, write_text

FSDD_DIR = "fsdd"
RECORDINGS_DIR = "recordings"
FSDD_SOURCE = "https://github.com/Jakobovski/free-spoken-digit-dataset"
FSDD_URLS = (
    "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/v1.0.10/recordings/",
    "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/master/recordings/",
)
MANIFEST_PATH = Path(__file__).with_name("fsdd_md5sums.txt")
FORMAT_VERSION = 1
_NAME = re.compile(r"(\d)_([A-Za-z]+)_(\d+)\.wav")


@dataclass(frozen=True)
class Recording:
    """One FSDD file: its name and the digit, speaker and take index the name encodes."""

    name: str
    digit: int
    speaker: str
    index: int


def parse_recording_name(name: str) -> Recording:
    """``"7_jackson_32.wav"`` -> Recording(name, 7, "jackson", 32); ValueError for any other form."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an FSDD recording name of the form {{digit}}_{{speaker}}_{{index}}.wav")
    return Recording(name, int(match[1]), match[2], int(match[3]))


@functools.lru_cache(maxsize=1)
def fsdd_manifest() -> dict[str, str]:
    """Recording name -> md5 of the 3,000 FSDD recordings, from the manifest shipped with pyromm."""
    manifest = {}
    for line in MANIFEST_PATH.read_text().splitlines():
        md5, relative = line.split()
        manifest[Path(relative).name] = md5
    return manifest


def recordings_of(manifest: Mapping[str, str]) -> list[Recording]:
    """The recordings named in ``manifest``, ordered by digit, speaker and take index."""
    return sorted((parse_recording_name(n) for n in manifest), key=lambda r: (r.digit, r.speaker, r.index))


def recording_file(root: str | os.PathLike | None, name: str, md5: str) -> Path:
    """The md5-checked path ``<root>/fsdd/recordings/<name>``, downloaded from the FSDD repository if missing."""
    path = data_root(root) / FSDD_DIR / RECORDINGS_DIR / name
    return ensure_file(path, md5, [url + name for url in FSDD_URLS])


def spectrogram_cache_key(manifest: Mapping[str, str], settings: SpectrogramSettings) -> str:
    """md5 of the JSON of (format version, settings, sorted (name, md5) pairs)."""
    payload = {"format": FORMAT_VERSION, "settings": settings.to_dict(), "recordings": sorted(manifest.items())}
    return hashlib.md5(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def spectrogram_cache_dir(cache_dir: str | os.PathLike | None, key: str) -> Path:
    """``<cache root>/fsdd/spectrograms_<key>``."""
    return cache_root(cache_dir) / FSDD_DIR / f"spectrograms_{key}"


def load_fsdd_spectrograms(
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    settings: SpectrogramSettings = SpectrogramSettings(),
    manifest: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, list[Recording]]:
    """uint8 spectrograms (N, n_mels, frames) = round(255 S) of the ``manifest`` recordings (default: all of
    FSDD) in :func:`recordings_of` order, with those recordings.

    Read from the cache when it holds them; else every file is md5-checked (downloaded if missing: a missing or
    corrupt file raises FileNotFoundError / ChecksumError naming it), converted and the result cached (with a
    warning if that fails).
    """
    manifest = dict(fsdd_manifest() if manifest is None else manifest)
    recordings = recordings_of(manifest)
    key = spectrogram_cache_key(manifest, settings)
    directory = spectrogram_cache_dir(cache_dir, key)
    cached = _read_cache(directory, recordings, settings)
    if cached is not None:
        return cached, recordings
    paths = [recording_file(root, r.name, manifest[r.name]) for r in recordings]
    spectrograms = np.stack([_quantise(wav_spectrogram(p, settings)) for p in paths])
    try:
        _write_cache(directory, recordings, settings, key, spectrograms)
    except OSError as err:
        warnings.warn(f"could not cache FSDD spectrograms in {directory}: {err}", stacklevel=2)
    return spectrograms, recordings


def _quantise(spectrogram: np.ndarray) -> np.ndarray:
    return np.rint(255.0 * spectrogram).astype(np.uint8)


def _read_cache(directory: Path, recordings: list[Recording], settings: SpectrogramSettings) -> np.ndarray | None:
    array_path, meta_path = directory / "spectrograms.npy", directory / "recordings.json"
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if meta.get("recordings") != [r.name for r in recordings]:
        return None
    if array.dtype != np.uint8 or array.shape != (len(recordings), *settings.shape):
        return None
    return array


def _write_cache(
    directory: Path, recordings: list[Recording], settings: SpectrogramSettings, key: str, spectrograms: np.ndarray
) -> None:
    with atomic_open(directory / "spectrograms.npy", "wb") as f:
        np.save(f, spectrograms, allow_pickle=False)
    meta = {"key": key, "settings": settings.to_dict(), "format": FORMAT_VERSION, "source": FSDD_SOURCE,
            "recordings": [r.name for r in recordings]}
    write_text(directory / "recordings.json", json.dumps(meta, indent=1))
