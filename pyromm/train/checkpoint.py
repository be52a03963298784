"""Training checkpoints: atomic writes, tensor-only loading, model signatures, RNG state, rotation.

A checkpoint is a dict of tensors and plain values (ints, floats, strings, lists, dicts, None), so it
loads with ``torch.load(weights_only=True)`` and never unpickles arbitrary objects.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

REQUIRED_KEYS = ("model", "optimizer", "epoch", "step", "stage", "rng", "generator", "model_signature", "config")
_NAME = re.compile(r"^epoch-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or is not a pyromm checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for a different model (class, parameter names or shapes)."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Write to a temporary file in the target's directory, then flush, fsync and ``os.replace`` it.

    Readers see either the old file or the complete new one; on error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_signature(model: nn.Module) -> dict[str, Any]:
    """The model's class name and the sorted names and shapes of its state (parameters and buffers)."""
    return {
        "class": type(model).__qualname__,
        "parameters": [[name, list(t.shape)] for name, t in sorted(model.state_dict().items())],
    }


def check_signature(expected: Mapping[str, Any], found: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise ``CheckpointMismatchError`` naming the class or first parameter where the signatures differ."""
    if expected["class"] != found["class"]:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for model class {found['class']!r}, not {expected['class']!r}"
        )
    mine = {name: list(shape) for name, shape in expected["parameters"]}
    theirs = {name: list(shape) for name, shape in found["parameters"]}
    for name in sorted(mine.keys() | theirs.keys()):
        if name not in theirs:
            raise CheckpointMismatchError(f"checkpoint {path} has no parameter {name!r} that the model has")
        if name not in mine:
            raise CheckpointMismatchError(f"checkpoint {path} has parameter {name!r} that the model lacks")
        if mine[name] != theirs[name]:
            raise CheckpointMismatchError(
                f"parameter {name!r} has shape {tuple(theirs[name])} in checkpoint {path} "
                f"but {tuple(mine[name])} in the model"
            )


def load_model_state(model: nn.Module, state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Check the model signature against the checkpoint's, then load its parameters."""
    check_signature(model_signature(model), state["model_signature"], path)
    model.load_state_dict(state["model"])


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python ``random`` global RNG states as tensors and plain values."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss_next": gauss_next},
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``capture_rng_state`` returned; CUDA states only when the same devices are present."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npy = state["numpy"]
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Atomically write ``state`` (which must hold every key of ``REQUIRED_KEYS``) to ``path``."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    with atomic_open(path, "wb") as handle:
        torch.save(dict(state), handle)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` when ``path`` is missing and ``CheckpointError`` naming the file when it
    is truncated, corrupt, holds anything but tensors and plain values, or lacks checkpoint keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = " ".join(str(err).partition("WeightsUnpickler error:")[2].split("Check the documentation")[0].split())
        raise CheckpointError(
            f"cannot load checkpoint {path}: refused by the tensor-only (weights_only) unpickler: {detail or err}"
        ) from err
    except Exception as err:
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return state


class CheckpointDir:
    """``epoch-NNNNN.pt`` files in one directory, keeping the ``keep_last`` newest (None keeps all)."""

    def __init__(self, directory: str | os.PathLike, keep_last: int | None = 2) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def path_for(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:05d}.pt"

    def paths(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write the checkpoint of epoch ``state["epoch"]``, then delete all but the newest ``keep_last``."""
        path = self.path_for(int(state["epoch"]))
        save_checkpoint(path, state)
        if self.keep_last is not None:
            for old in self.paths()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Delete every checkpoint of this directory."""
        for path in self.paths():
            path.unlink()
