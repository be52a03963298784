"""Run identity: which experiment a run directory, and each checkpoint in it, holds.

A run's identity is its config (``config.json``: the run, model and trainer settings), the SHA-256 of that
config with the resumable settings left out, the SHA-256 of the model's architecture (class, parameter
names and shapes) and the pyromm version that wrote it. ``identity.json`` holds the hashes and the version
next to ``config.json``; every checkpoint carries its config, its architecture and the same stamp.

Resumable settings (``RESUMABLE_SETTINGS``) change how long or where a run trains, not what its checkpoints
mean: a run may be extended to more epochs or moved to another device. A stage objective's class name is
resumable too: it says little (not its settings) and a wrapper around the same objective changes it; the
run config (``pyromm.run``) names the objective by its settings. Any other difference is another
experiment, and resuming it raises ``RunIdentityError`` showing the differences.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyromm import __version__
from pyromm.files import write_text

CONFIG_FILE = "config.json"
IDENTITY_FILE = "identity.json"
# Paths into the run config that may differ between a run and its resumption ("*": any list index).
# RunConfig fields a resumed run may change: where and how long it trains and how it is evaluated, not what its
# checkpoints mean.
# RunConfig fields that say how a trained run is evaluated (and where its data are), not what was trained.
EVALUATION_FIELDS = frozenset(
    {"device", "classifier_epochs", "classifier_train_limit", "eval_num_train", "latent_sampler",
     "store_latent_sampler", "data_root", "cache_root", "fid_network", "fid_weights"}
)
RESUMABLE_FIELDS = EVALUATION_FIELDS | {"epochs", "checkpoint_every"}
RESUMABLE_SETTINGS: tuple[tuple[str, ...], ...] = (
    *(("run", name) for name in sorted(RESUMABLE_FIELDS)),
    ("trainer", "checkpoint_every"),
    ("trainer", "keep_last"),
    ("trainer", "stages", "*", "epochs"),
    ("trainer", "stages", "*", "objective"),
)
_SHOWN_DIFFERENCES = 8


class RunIdentityError(RuntimeError):
    """A run directory or checkpoint holds another experiment, or its identity cannot be read."""


@dataclass(frozen=True)
class RunIdentity:
    """A run's config, its model architecture (``model_signature``) and the pyromm version."""

    config: Mapping[str, Any]
    architecture: Mapping[str, Any]
    pyromm_version: str = __version__

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def architecture_hash(self) -> str:
        return _sha256(self.architecture)

    def stamp(self) -> dict[str, str]:
        """The hashes and the version, as stored in ``identity.json``, checkpoints and evaluations."""
        return {
            "config_hash": self.config_hash,
            "architecture_hash": self.architecture_hash,
            "pyromm_version": self.pyromm_version,
        }


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` without its resumable settings."""
    return _sha256(sorted(_comparable(config).items()))


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], old_name: str) -> list[str]:
    """``"run.beta: 4.0 in <old_name>, 1.0 now"`` for each non-resumable setting that differs."""
    before, after = _comparable(old), _comparable(new)
    missing = object()
    lines = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key, missing), after.get(key, missing)
        if a != b:
            shown_a = "absent" if a is missing else json.dumps(a)
            shown_b = "absent" if b is missing else json.dumps(b)
            lines.append(f"{key}: {shown_a} in {old_name}, {shown_b} now")
    return lines


def read_config(run_dir: str | os.PathLike, why: str) -> dict[str, Any]:
    """``run_dir/config.json``; raises ``RunIdentityError`` (naming the file and ``why`` it is needed) when it
    is missing, unreadable or not a JSON object."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problem = f"cannot be read ({type(err).__name__}: {err})"
    else:
        if isinstance(config, dict):
            return config
        problem = f"holds a JSON {type(config).__name__}, not an object"
    raise RunIdentityError(f"{path} {problem}, {why}")


def check_run_directory(run_dir: str | os.PathLike, config: Mapping[str, Any], scope: Sequence[str] | None = None) -> None:
    """Raise ``RunIdentityError`` unless the run in ``run_dir`` (which has checkpoints) was trained with
    ``config`` up to resumable settings; ``scope`` limits the comparison to those top-level keys."""
    saved = read_config(
        run_dir,
        "but the directory holds checkpoints, so pyromm cannot tell which experiment they belong to: restore the "
        "file, or start afresh with resume='never' (pyromm train --no-resume), which deletes the checkpoints",
    )
    if scope is not None:
        saved = {k: v for k, v in saved.items() if k in scope}
        config = {k: v for k, v in config.items() if k in scope}
    differences = config_differences(saved, config, "the run")
    if differences:
        raise RunIdentityError(f"run directory {run_dir} holds another experiment: {_listed(differences)}; {_ADVICE}")


def check_checkpoint_config(config: Mapping[str, Any], state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise ``RunIdentityError`` unless the checkpoint ``state`` (from ``path``) was written by a run of
    ``config``, up to resumable settings."""
    try:
        saved = json.loads(state["config"])
    except (TypeError, ValueError) as err:
        raise RunIdentityError(f"checkpoint {path} holds no readable config ({err}); delete it to resume") from None
    differences = config_differences(saved, config, "the checkpoint")
    if differences:
        raise RunIdentityError(
            f"checkpoint {path} belongs to another experiment: {_listed(differences)}; move it out of "
            f"{Path(path).parent}, or {_ADVICE}"
        )


def write_identity(run_dir: str | os.PathLike, identity: RunIdentity) -> None:
    """Atomically write ``config.json`` (the config) and ``identity.json`` (hashes, version, architecture)."""
    run_dir = Path(run_dir)
    write_text(run_dir / CONFIG_FILE, json.dumps(identity.config, indent=2))
    write_text(run_dir / IDENTITY_FILE, json.dumps({**identity.stamp(), "architecture": identity.architecture}, indent=2))


def read_stamp(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The hashes and version in ``run_dir/identity.json``, or None when the file is missing or unreadable."""
    try:
        stamp = json.loads((Path(run_dir) / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict):
        return None
    return {k: stamp.get(k) for k in ("config_hash", "architecture_hash", "pyromm_version")}


_ADVICE = "use another run directory, or start afresh with resume='never' (pyromm train --no-resume)"


def _listed(differences: list[str]) -> str:
    shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
    more = len(differences) - _SHOWN_DIFFERENCES
    return shown + (f"; and {more} more" if more > 0 else "")


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` flattened to ``{"run.beta": 1.0, "trainer.stages.0.name": "train", ...}``, resumable settings
    left out."""
    flat: dict[str, Any] = {}

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if any(_matches(path, pattern) for pattern in RESUMABLE_SETTINGS):
            return
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(item, (*path, str(key)))
        elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            for index, item in enumerate(value):
                walk(item, (*path, str(index)))
        else:
            flat[".".join(path)] = list(value) if isinstance(value, tuple) else value

    walk(config, ())
    return flat


def _matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(p == q or (q == "*" and p.isdigit()) for p, q in zip(path, pattern))


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
