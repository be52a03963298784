"""Where an evaluation comes from: the checkpoint it scored, and whether that is still the run's newest.

``evaluation.json`` records ``source``: the checkpoint file (relative to the run directory), its epoch, batch
and step, and the run identity stamp (``pyromm.identity``) of the checkpoint; None when the run directory had
no checkpoint. An evaluation is stale when the
run has a newer checkpoint than the one scored, or its identity has changed since.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from pyromm.identity import RunIdentity, read_stamp
from pyromm.train.checkpoint import CheckpointDir

CHECKPOINT_DIR = "checkpoints"
EVALUATION_FILE = "evaluation.json"
_HASHES = ("config_hash", "architecture_hash")


def checkpoint_source(path: str | os.PathLike, state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``source`` record of the checkpoint ``state`` loaded from ``path``."""
    stamp = state.get("identity") or {}
    identity = RunIdentity(json.loads(state["config"]), state["model_signature"], stamp.get("pyromm_version", "unknown"))
    return {
        "checkpoint": f"{CHECKPOINT_DIR}/{Path(path).name}",
        "epoch": int(state["epoch"]),
        "batch": int(state.get("batch", 0)),
        "step": int(state["step"]),
        "identity": identity.stamp(),
    }


def latest_source(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``source`` of ``run_dir``'s newest readable checkpoint, or None when it has none."""
    found = CheckpointDir(Path(run_dir) / CHECKPOINT_DIR).load_latest(map_location="cpu")
    return None if found is None else checkpoint_source(*found)


def evaluation_problem(run_dir: str | os.PathLike, results: Mapping[str, Any]) -> str | None:
    """Why the evaluation ``results`` of ``run_dir`` no longer describes the run (None when it does)."""
    if "source" not in results:
        return "it does not record which checkpoint it scored (written by an older pyromm)"
    source = results["source"]
    if not isinstance(source, Mapping) or "checkpoint" not in source:
        return "it scored a model that was not loaded from a checkpoint of this run"
    scored = f"it scored {source['checkpoint']} (epoch {source.get('epoch')}, step {source.get('step')})"
    latest = CheckpointDir(Path(run_dir) / CHECKPOINT_DIR).latest()
    if latest is None:
        return f"{scored}, but the run has no checkpoint now"
    if f"{CHECKPOINT_DIR}/{latest.name}" != source["checkpoint"]:
        return f"{scored}, but the run's newest checkpoint is {CHECKPOINT_DIR}/{latest.name}"
    stamp = read_stamp(run_dir)
    identity = source.get("identity") or {}
    if stamp is not None and any(stamp.get(k) != identity.get(k) for k in _HASHES):
        return f"{scored} of another config or model than the run's identity.json holds now"
    return None
