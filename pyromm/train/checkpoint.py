"""Training checkpoints: atomic writes, tensor-only loading, checksums, model signatures, RNG state, rotation.

A checkpoint is a dict of tensors and plain values (ints, floats, strings, lists, dicts, None), so it
loads with ``torch.load(weights_only=True)`` and never unpickles arbitrary objects. It carries a SHA-256
checksum of its contents, so a corrupt file is detected on load, not just a truncated one.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pyromm.files import atomic_open

REQUIRED_KEYS = ("model", "optimizer", "epoch", "step", "stage", "rng", "generator", "model_signature", "config")
CHECKSUM_KEY = "checksum"
_NAME = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or is not a pyromm checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for a different model (class, parameter names or shapes)."""


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


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over the nested contents of ``state``: keys, plain values, tensor dtypes, shapes and bytes."""
    digest = hashlib.sha256()

    def update(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, Mapping):
            digest.update(f"D{len(value)};".encode())
            for key, item in value.items():
                update(key)
                update(item)
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)};".encode())
            for item in value:
                update(item)
        else:
            digest.update(f"V{type(value).__name__}:{value!r};".encode())

    update(state)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Atomically write ``state`` (which must hold every key of ``REQUIRED_KEYS``) and its checksum to ``path``."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    state = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    buffer = io.BytesIO()
    torch.save({**state, CHECKSUM_KEY: state_checksum(state)}, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = None, *, allow_unchecked: bool = False
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` when ``path`` is missing and ``CheckpointError`` naming the file when it
    is truncated, corrupt (its contents differ from its checksum), holds anything but tensors and plain
    values, lacks checkpoint keys, or has no checksum: a file without one (written before pyromm kept
    checksums, or with the key removed) loads only with ``allow_unchecked=True``.
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
    checksum = state.pop(CHECKSUM_KEY, None)
    if checksum is None and not allow_unchecked:
        raise CheckpointError(
            f"checkpoint {path} has no {CHECKSUM_KEY!r} key, so its contents cannot be verified; if you trust the "
            "file, load it with load_checkpoint(path, allow_unchecked=True)"
        )
    if checksum is not None and checksum != state_checksum(state):
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match its SHA-256 checksum")
    return state


def _check_position(path: Path, state: Mapping[str, Any]) -> None:
    """Raise ``CheckpointMismatchError`` unless ``state`` is at the epoch and batch its file name says."""
    match = _NAME.match(path.name)
    named = (int(match.group(1)), int(match.group(2) or 0))
    held = (int(state["epoch"]), int(state.get("batch", 0)))
    if named != held:
        raise CheckpointMismatchError(
            f"checkpoint {path} holds epoch {held[0]}" + (f", batch {held[1]}" if held[1] else "")
            + f" (step {state['step']}) but its name says epoch {named[0]}" + (f", batch {named[1]}" if named[1] else "")
            + ": it was renamed or copied from another run; delete it to resume from the others"
        )


class CheckpointDir:
    """Checkpoints in one directory, keeping the ``keep_last`` newest (None keeps all).

    ``epoch-EEEEE.pt`` is the state after epoch E; ``epoch-EEEEE-batch-BBBBBB.pt`` (written on a stop signal)
    the state after epoch E and B batches of epoch E + 1. Files sort by (E, B), oldest first. ``stamp`` (the
    run's identity hashes and pyromm version, ``pyromm.identity``) is saved in every checkpoint as ``identity``.
    """

    def __init__(
        self, directory: str | os.PathLike, keep_last: int | None = 2, stamp: Mapping[str, str] | None = None
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.stamp = None if stamp is None else dict(stamp)

    def path_for(self, epoch: int, batch: int = 0) -> Path:
        suffix = f"-batch-{batch:06d}" if batch else ""
        return self.directory / f"epoch-{epoch:05d}{suffix}.pt"

    def paths(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            ((int(m.group(1)), int(m.group(2) or 0)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        paths = self.paths()
        return paths[-1] if paths else None

    def load_latest(self, map_location: str | torch.device | None = None) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint and its state, or None when there is no checkpoint.

        A newer unreadable one (truncated or corrupt) is renamed to ``<name>.corrupt``, out of the rotation,
        with a warning naming it and the checkpoint used instead. Raises ``CheckpointError`` (renaming
        nothing) when every checkpoint is unreadable, and ``CheckpointMismatchError`` when the chosen file
        holds another epoch or batch than its name says (a file copied in from elsewhere).
        """
        bad: list[tuple[Path, CheckpointError]] = []
        for path in reversed(self.paths()):
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as err:
                bad.append((path, err))
                continue
            _check_position(path, state)
            for broken, err in bad:
                kept = broken.replace(broken.with_name(broken.name + ".corrupt"))
                warnings.warn(f"{err}; falling back to {path.name} (the bad file is kept as {kept.name})", stacklevel=2)
            return path, state
        if bad:
            raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(str(e) for _, e in bad))
        return None

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write the checkpoint of ``state["epoch"]`` (and ``state["batch"]``, if any), then delete all but
        the newest ``keep_last``."""
        path = self.path_for(int(state["epoch"]), int(state.get("batch", 0)))
        save_checkpoint(path, state if self.stamp is None else {**state, "identity": self.stamp})
        if self.keep_last is not None:
            for old in self.paths()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Delete every checkpoint of this directory."""
        for path in self.paths():
            path.unlink()
