"""The steps of ``pyromm data prepare`` and the lines of ``pyromm data list``: verifying (downloading what is
missing), generating and caching each dataset's files, and showing which are present.

Dataset modules call these from their ``prepare`` and ``describe``; this module imports the data code (numpy,
torch) that the registry itself does without."""
from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyromm.data import load_digits_multiview, load_mnist_fsdd, load_polymnist, published
from pyromm.data.audio import SpectrogramSettings
from pyromm.data.fsdd import (
    FSDD_DIR,
    RECORDINGS_DIR,
    fsdd_manifest,
    load_fsdd_spectrograms,
    recording_file,
    spectrogram_cache_dir,
    spectrogram_cache_key,
)
from pyromm.data.mnist import MNIST_MD5, mnist_file
from pyromm.data.paths import md5sum, verify_md5
from pyromm.data.polymnist import (
    BACKGROUND_DIR,
    BACKGROUNDS,
    load_background,
    polymnist_cache_dir,
    polymnist_metadata,
)


def human_size(num_bytes: int) -> str:
    """``num_bytes`` in B (whole), KB, MB or GB (one decimal), powers of 1024."""
    value = float(num_bytes)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


# ----------------------------------------------------------------------------------------------------- MNIST


def prepare_mnist(root: Path) -> None:
    """Verify the md5 of every MNIST file present (all before any download), then fetch missing ones."""
    directory = root / "mnist"
    present = [name for name in MNIST_MD5 if (directory / name).exists()]
    for name in present:
        verify_md5(directory / name, MNIST_MD5[name])
    for name in MNIST_MD5:
        path = directory / name
        action = "verified  " if name in present else "downloaded"
        if name not in present:
            print(f"  downloading {name} ...", flush=True)
            mnist_file(root, name)
        print(f"  {action} {path}  {human_size(path.stat().st_size)}  md5 {MNIST_MD5[name]} ok")


def mnist_lines(root: Path) -> list[str]:
    """The MNIST files: present (size, md5 status) or missing."""
    lines = [f"MNIST  ({root / 'mnist'})"]
    for name, md5 in MNIST_MD5.items():
        path = root / "mnist" / name
        if not path.exists():
            lines.append(f"  missing    {name}")
            continue
        status = "md5 ok" if md5sum(path) == md5 else f"MD5 MISMATCH (expected {md5})"
        lines.append(f"  present    {name:<28}{human_size(path.stat().st_size):>10}  {status}")
    return lines


# ------------------------------------------------------------------------------------------------------ FSDD


def prepare_fsdd(root: Path, cache: Path) -> None:
    """md5-check every FSDD recording (downloading missing ones), then compute or find their cached spectrograms."""
    manifest = fsdd_manifest()
    directory = root / FSDD_DIR / RECORDINGS_DIR
    missing = [name for name in manifest if not (directory / name).exists()]
    if missing:
        print(f"  downloading {len(missing)} of {len(manifest)} FSDD recordings ...", flush=True)
    for name, md5 in manifest.items():
        recording_file(root, name, md5)
    print(f"  verified   {len(manifest)} recordings in {directory}  md5 ok")
    settings = SpectrogramSettings()
    cached = spectrogram_cache_dir(cache, spectrogram_cache_key(manifest, settings))
    existed = (cached / "spectrograms.npy").exists()
    started = time.perf_counter()
    spectrograms, _ = load_fsdd_spectrograms(root, cache_dir=cache, settings=settings)
    state = "cached     " if existed else "computed   "
    print(f"  {state}{spectrograms.shape[0]} spectrograms {settings.n_mels}x{settings.frames}  "
          f"({time.perf_counter() - started:.1f} s)  {cached}")


def fsdd_lines(root: Path, cache: Path) -> list[str]:
    """How many FSDD recordings are present (and md5-correct), and the cached spectrogram sets."""
    directory = root / FSDD_DIR / RECORDINGS_DIR
    manifest = fsdd_manifest()
    lines = [f"FSDD recordings  ({directory})"]
    present = [name for name in manifest if (directory / name).exists()]
    wrong = [name for name in present if md5sum(directory / name) != manifest[name]]
    size = sum((directory / name).stat().st_size for name in present)
    if present:
        lines.append(f"  present    {len(present)} of {len(manifest)} recordings  {human_size(size):>10}  "
                     + (f"MD5 MISMATCH in {len(wrong)} (first: {wrong[0]})" if wrong else "md5 ok"))
    if len(present) < len(manifest):
        lines.append(f"  missing    {len(manifest) - len(present)} of {len(manifest)} recordings")
    spectrograms = sorted((cache / FSDD_DIR).glob("spectrograms_*/spectrograms.npy"))
    for path in spectrograms:
        lines.append(f"  cached     {path.parent.name}  {human_size(path.stat().st_size):>10}")
    if not spectrograms:
        lines.append("  none cached (pyromm data prepare fsdd | mnist_fsdd)")
    return lines


def prepare_mnist_fsdd(root: Path, cache: Path, seed: int) -> None:
    """Pair both splits of MNIST + spoken digits (MNIST and FSDD prepared before)."""
    for split in ("train", "test"):
        data = load_mnist_fsdd(root, split, seed=seed, cache_dir=cache)
        print(f"  ready      mnist_fsdd {split:<5} {len(data):>6} pairs, {data.metadata['num_recordings']} recordings "
              f"of {', '.join(data.metadata['speakers'])}")


# ---------------------------------------------------------------------------------------------------- digits


def prepare_digits(views: int) -> None:
    """Load both splits: bundled with scikit-learn, nothing to download or cache."""
    for split in ("train", "test"):
        data = load_digits_multiview(split, views)
        shape = "x".join(str(s) for s in next(iter(data.event_shapes.values())))
        print(f"  ready      digits {split:<5} {len(data):>5} tuples x {views} views of {shape}  "
              "(bundled with scikit-learn, nothing to download or cache)")


# ------------------------------------------------------------------------------------------------- PolyMNIST


def prepare_polymnist(root: Path, cache: Path, views: int, translated: bool, seed: int) -> None:
    """Verify the backgrounds of ``views`` views, then generate the train and test splits into the cache root."""
    for m in range(views):
        load_background(root, m)  # md5-checked; a missing file raises FileNotFoundError naming it
        name, md5 = BACKGROUNDS[m]
        print(f"  verified   {root / BACKGROUND_DIR / name}  (view m{m})  md5 {md5} ok")
    directory = polymnist_cache_dir(cache, views, translated, seed)
    expected = polymnist_metadata(views, translated, seed)
    for split in ("train", "test"):
        files = [directory / f"{split}_m{m}.npy" for m in range(views)] + [directory / f"{split}_labels.npy"]
        existed = all(f.exists() for f in files) and _read_json(directory / "metadata.json") == expected
        started = time.perf_counter()
        dataset = load_polymnist(root, split, views, translated=translated, seed=seed, cache_dir=cache)
        seconds = time.perf_counter() - started
        if not all(f.exists() for f in files):
            raise OSError(errno.EIO, "could not write the PolyMNIST cache (is the cache root writable?)",
                          str(directory))
        size = sum(f.stat().st_size for f in files)
        state = "cached     " if existed else "generated  "
        print(f"  {state}{split:<5} {len(dataset):>6} tuples x {views} views  {human_size(size):>9}  "
              f"({seconds:.1f} s)  {directory}")
    print(f"  metadata:  {directory / 'metadata.json'}  (seed {seed})")


def polymnist_lines(root: Path, cache: Path) -> list[str]:
    """The background images (md5 status), then every cached variant (PolyMNIST and Translated PolyMNIST) in the
    cache root and, when it is another directory, the data root."""
    lines = [f"PolyMNIST backgrounds  ({root / BACKGROUND_DIR})"]
    for m, (name, md5) in enumerate(BACKGROUNDS):
        path = root / BACKGROUND_DIR / name
        if not path.exists():
            lines.append(f"  missing    m{m}  {name}")
            continue
        status = "md5 ok" if md5sum(path) == md5 else f"MD5 MISMATCH (expected {md5})"
        lines.append(f"  present    m{m}  {name:<34}{human_size(path.stat().st_size):>10}  {status}")
    lines += ["", f"Cached PolyMNIST  ({cache / 'polymnist'})"]
    locations = [cache] + ([root] if root.resolve() != cache.resolve() else [])
    cached = [
        line
        for location in locations
        for line in cached_variants(location / "polymnist", note="" if location == cache else "  [in the data root]")
    ]
    return lines + (cached or ["  none       (pyromm data prepare polymnist | translated_polymnist)"])


def cached_variants(directory: Path, note: str = "") -> list[str]:
    """One line per cached PolyMNIST variant in ``directory``: name, splits with sizes, total size, seed."""
    if not directory.is_dir():
        return []
    lines = []
    variants = sorted(p for p in directory.iterdir() if p.is_dir())
    width = max((len(v.name) for v in variants), default=0) + 2
    for variant in variants:
        meta = _read_json(variant / "metadata.json")
        meta = meta if isinstance(meta, dict) else None
        size = sum(f.stat().st_size for f in variant.iterdir() if f.is_file())
        splits = []
        for split in ("train", "test"):
            labels = variant / f"{split}_labels.npy"
            if labels.exists():
                try:
                    splits.append(f"{split} {np.load(labels, mmap_mode='r').shape[0]}")
                except (OSError, ValueError):
                    splits.append(f"{split} unreadable")
        if meta is None:
            lines.append(f"  incomplete {variant.name}  {human_size(size)}  (no readable metadata.json){note}")
            continue
        lines.append(
            f"  cached     {variant.name:<{width}}{', '.join(splits) or 'no splits':<24}{human_size(size):>10}  "
            f"seed {meta.get('seed')}, {meta.get('num_views')} views, {meta.get('dataset')}{note}"
        )
    return lines


def _read_json(path: Path) -> Any:
    """The JSON content of ``path``; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------- published formats


def published_lines(name: str, root: Path) -> list[str]:
    """Each file (folder) of a published dataset: present, with its size and md5 status (file count), or missing."""
    lines = [f"{name}  ({root})"]
    for entry in published.DATASETS[name].files:
        present, size, detail = published.file_status(root, entry)
        label = entry.path + ("/" if entry.folder else "")
        lines.append(
            f"  present    {label:<44}{human_size(size):>10}  {detail}" if present else f"  missing    {label}"
        )
    return lines
