"""Trained runs loaded back: :func:`load` rebuilds the model of a run directory and loads its last checkpoint.

A run trained by ``pyromm train`` (or :func:`pyromm.run.train`) records its ``RunConfig`` under ``"run"`` in
``config.json``, which rebuilds the model. A run trained with the Python API (``Trainer(model, ..., run_dir=...)``)
records the model's ``config()`` under ``"model"``; to make it loadable by itself, record the function that built
the model as well, ``Trainer(..., config=builder_config(build, **kwargs))``, or pass a model built the same way to
``load(run_dir, model=...)``. Either way the model's config and parameter shapes are checked against the saved ones.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from pyromm.config import ConfigError, RunConfig
from pyromm.generation import attach_stored_latent_sampler
from pyromm.modality_options import import_object
from pyromm.models import Modality
from pyromm.provenance import CHECKPOINT_DIR
from pyromm.run import build_model, load_run_with_source
from pyromm.train import CheckpointDir
from pyromm.train.checkpoint import load_model_state

BUILDER = "builder"


class RunLoadError(ConfigError):
    """A run directory cannot be loaded as asked: no model to load into, or one that does not match the saved one."""


@dataclass(frozen=True)
class LoadedRun:
    """A trained run: the model (eval mode, last checkpoint's weights), its ``RunConfig`` (None for a Python-API run)
    and ``config.json`` as saved."""

    run_dir: Path
    model: nn.Module
    config: RunConfig | None
    saved_config: dict[str, Any]

    @property
    def modalities(self) -> dict[str, Modality]:
        """The model's modalities by name (encoder, decoder, likelihood, event shape, weight)."""
        return dict(self.model.modalities)


def builder_config(builder: Callable[..., nn.Module], **kwargs: Any) -> dict[str, Any]:
    """The ``config`` entry for ``Trainer(..., config=...)`` that lets :func:`load` rebuild the model as
    ``builder(**kwargs)``: a module-level function or class (``package.module:Name``) and JSON-able arguments."""
    path = f"{builder.__module__}:{builder.__qualname__}"
    if "<locals>" in path or "<lambda>" in path:
        raise ConfigError(f"builder {path} is not importable: define it at module level")
    try:
        found = import_object(path, "builder")
    except ConfigError as err:
        raise ConfigError(f"{err} (define the builder in an importable module)") from None
    if found is not builder:
        raise ConfigError(f"builder {path} does not import back as the function given")
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ConfigError(f"builder arguments must be JSON-able (numbers, strings, lists, dicts): {err}") from None
    return {BUILDER: {"path": path, "kwargs": kwargs}}


def read_saved_config(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/config.json``; FileNotFoundError naming the directory when it is no run directory."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(2, "not a run directory (no config.json)", str(run_dir))
    return json.loads(path.read_text())


def is_python_api_run(saved: dict[str, Any]) -> bool:
    """Whether ``config.json`` comes from a ``Trainer`` run of the Python API (no ``RunConfig`` under ``"run"``)."""
    return "run" not in saved


def load(run_dir: str | Path, model: nn.Module | None = None, map_location: str = "cpu") -> LoadedRun:
    """The trained model of ``run_dir`` with its config and modalities: rebuilt from its ``RunConfig`` (CLI runs) or
    recorded builder, or ``model`` itself (built as for training) with the checkpoint's weights loaded into it.

    A model that generates through a fitted latent sampler (``MultimodalVAE``) gets the one the run stores
    (``latent_sampler.pt``, ``pyromm.generation``) attached when it was fitted on the weights loaded; without
    one, ``model.sample`` says why there is none."""
    run_dir = Path(run_dir)
    saved = read_saved_config(run_dir)
    cfg = None if is_python_api_run(saved) else RunConfig.from_saved(saved["run"], run_dir / "config.json")
    if model is None and cfg is not None and "modalities" not in saved.get("model", {}):
        cfg, model, source = load_run_with_source(run_dir, map_location)
        attach_stored_latent_sampler(run_dir, model, source["checkpoint"])
        return LoadedRun(run_dir, model.eval(), cfg, saved)
    if model is None:
        model = _rebuild(run_dir, saved, cfg)
    _check_model_config(run_dir, model, saved)
    found = CheckpointDir(run_dir / "checkpoints").load_latest(map_location)
    if found is None:
        raise FileNotFoundError(2, "no checkpoint to load", str(run_dir / "checkpoints"))
    path, state = found
    load_model_state(model, state, path)
    attach_stored_latent_sampler(run_dir, model, f"{CHECKPOINT_DIR}/{path.name}")
    return LoadedRun(run_dir, model.eval(), cfg, saved)


def _rebuild(run_dir: Path, saved: dict[str, Any], cfg: RunConfig | None) -> nn.Module:
    """The untrained model of a run: from its RunConfig (event shapes from the saved model config), else from the
    recorded builder; a RunLoadError saying what to pass otherwise."""
    if cfg is not None:
        shapes = {name: tuple(m["event_shape"]) for name, m in saved["model"]["modalities"].items()}
        return build_model(cfg, shapes)
    builder = saved.get(BUILDER)
    if builder is not None:
        return import_object(builder["path"], f"{run_dir}: builder")(**builder["kwargs"])
    raise RunLoadError(
        f"{run_dir} was trained with the Python API and config.json records no builder, so its model "
        f"({describe_model(saved)}) cannot be rebuilt: build it as for training and pass it, "
        "pyromm.load(run_dir, model=model), or record the builder when training: "
        "Trainer(..., config=pyromm.builder_config(build, **kwargs))"
    )


def describe_model(saved: dict[str, Any]) -> str:
    """'MultimodalVAE, latent_dim 8, modalities image (1, 28, 28), vector (8,)' from a saved model config."""
    model = saved.get("model")
    if not isinstance(model, dict):
        return "no model config saved"
    shapes = ", ".join(f"{name} {tuple(m['event_shape'])}" for name, m in model.get("modalities", {}).items())
    return f"{model.get('family')}, latent_dim {model.get('latent_dim')}, modalities {shapes}"


def _check_model_config(run_dir: Path, model: nn.Module, saved: dict[str, Any]) -> None:
    """The model's ``config()`` against the saved one, key by key (models without ``config()`` are not checked)."""
    expected = saved.get("model")
    config = getattr(model, "config", None)
    if expected is None or not callable(config):
        return
    actual = json.loads(json.dumps(config()))
    differing = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    if differing:
        key = differing[0]
        raise RunLoadError(
            f"the model passed to load does not match {run_dir}: {key} is {actual.get(key)!r}, the run's is "
            f"{expected.get(key)!r} (build it as for training: {describe_model(saved)})"
        )


def evaluation_setup(run_dir: str | Path, data_config: RunConfig | None, map_location: str = "cpu") -> tuple[RunConfig, nn.Module]:
    """The config that names the evaluation data and settings, and the trained model, for ``pyromm evaluate``: a CLI
    run's own RunConfig; for a Python-API run ``data_config`` (from ``--config``, with its dataset), which it needs."""
    run_dir = Path(run_dir)
    saved = read_saved_config(run_dir)
    if not is_python_api_run(saved):
        if data_config is not None:
            raise RunLoadError(f"{run_dir} was trained by pyromm train and its config names its data: drop --config")
        loaded = load(run_dir, map_location=map_location)
        return loaded.config, loaded.model
    if data_config is None:
        raise RunLoadError(
            f"{run_dir} was trained with the Python API and its config.json names no dataset: pass --config FILE.toml "
            "with a [dataset] table (and the evaluation settings), or evaluate it in Python with "
            "pyromm.evaluation.evaluate(pyromm.load(run_dir).model, ...)"
        )
    if BUILDER not in saved:
        raise RunLoadError(
            f"{run_dir} was trained with the Python API and config.json records no builder, so pyromm evaluate cannot "
            f"rebuild its model ({describe_model(saved)}): evaluate it in Python with pyromm.evaluation.evaluate("
            "pyromm.load(run_dir, model=model).model, ...), or record the builder when training: "
            "Trainer(..., config=pyromm.builder_config(build, **kwargs))"
        )
    return data_config, load(run_dir, map_location=map_location).model


def check_evaluation_data(run_dir: str | Path, model: nn.Module, event_shapes: dict[str, tuple[int, ...]]) -> None:
    """A RunLoadError unless the evaluation data have the model's modalities, of its event shapes."""
    expected = {name: tuple(m.event_shape) for name, m in model.modalities.items()}
    if dict(event_shapes) != expected:
        raise RunLoadError(
            f"the evaluation data have modalities {dict(event_shapes)}, the model of {run_dir} has {expected}: "
            "point --config at data of the same modalities and shapes"
        )


def not_evaluated_reason(run_dir: str | Path) -> str:
    """Why a run directory with no evaluation.json is left out of a table, and how to evaluate it."""
    run_dir = Path(run_dir)
    try:
        python_api = is_python_api_run(json.loads((run_dir / "config.json").read_text()))
    except ValueError:
        return "config.json is not valid JSON"
    if python_api:
        return (f"trained with the Python API and not evaluated: pyromm evaluate {run_dir} --config FILE.toml "
                "(with a [dataset] table), or pyromm.evaluation.evaluate in Python")
    return f"not evaluated: pyromm evaluate {run_dir}"
