r"""Unconditional generation, ``model.sample(n)``, and the fitted latent samplers that models without an
unconditional prior generate through.

Every built-in model has ``sample(n, generator=None) -> {modality: (n, *event_shape)}``
(``pyromm.models.joint_sampling``): one joint latent draw per row, each modality the mean of its decoder
distribution. Shared-latent models (AVG, PoE, MoE, MoPoE, MVAE, MVTCAE, JMVAE, TELBO, JNF, MMVAE, MMVAE+) draw
z ~ p(z). ``MultimodalVAE`` (the MMVM VAE, independent VAEs) has no unconditional prior over [z_1; …; z_M] and
draws from a sampler fitted on training latents (``pyromm.evaluation.latent_samplers``):
:func:`fit_generation_sampler` fits one and attaches it; a run directory stores it as ``latent_sampler.pt``
(:func:`save_latent_sampler`), which ``pyromm.load`` attaches again.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation import latent_samplers
from pyromm.files import write_bytes
from pyromm.models.joint_sampling import LatentSampler
from pyromm.train.checkpoint import state_checksum

LATENT_SAMPLER_FILE = "latent_sampler.pt"
FORMAT = 2


class LatentSamplerFileError(ValueError):
    """A ``latent_sampler.pt`` that cannot be read back as a latent sampler."""


def needs_latent_sampler(model: nn.Module) -> bool:
    """Whether ``model.sample`` draws its latents from an attached fitted sampler (``MultimodalVAE``)."""
    return callable(getattr(model, "attach_latent_sampler", None))


def fit_generation_sampler(
    model: nn.Module,
    train_set: MultimodalDataset,
    kind: str = "gmm",
    *,
    num_train: int = 10000,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    **options: Any,
) -> LatentSampler:
    """A ``kind`` sampler (``'gmm'``: Gaussian mixture by EM, ``'maf'``: masked autoregressive flow, built with
    ``options``) fitted on the latents of the first ``num_train`` training samples observing every modality
    (``pyromm.evaluation.fit_latent_sampler``), attached to ``model`` when it generates through one."""
    sampler = latent_samplers.fit_latent_sampler(
        model, train_set, kind, num_train=num_train, batch_size=batch_size, generator=generator, **options
    )
    if needs_latent_sampler(model):
        model.attach_latent_sampler(sampler)
    return sampler


def save_latent_sampler(
    run_dir: str | os.PathLike, sampler: LatentSampler, model: nn.Module, checkpoint: str | None = None
) -> Path:
    """Atomically write ``run_dir/latent_sampler.pt``: the sampler's kind, seed and fitted tensors (loadable with
    ``torch.load(weights_only=True)``), the SHA-256 of the weights of ``model``, the model it was fitted on, and
    ``checkpoint``, the run's checkpoint (relative path) those weights came from. ``pyromm.load`` attaches the
    sampler only to a model with the same weights."""
    kind = latent_samplers.sampler_kind(sampler)
    if kind is None:
        raise TypeError(
            f"a {type(sampler).__name__} cannot be saved: only the samplers {sorted(latent_samplers.LATENT_SAMPLERS)} "
            "of pyromm.generation.fit_generation_sampler can"
        )
    record = {
        "format": FORMAT,
        "kind": kind,
        "seed": int(sampler.seed),
        "checkpoint": checkpoint,
        "weights": state_checksum(model.state_dict()),
        "state": sampler.state(),
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    path = Path(run_dir) / LATENT_SAMPLER_FILE
    write_bytes(path, buffer.getvalue())
    return path


def read_latent_sampler(run_dir: str | os.PathLike) -> tuple[LatentSampler, dict[str, str | None]]:
    """The sampler stored in ``run_dir/latent_sampler.pt`` (on the CPU) and what it was fitted on: ``checkpoint``
    and ``weights`` (the SHA-256 of the model's weights); FileNotFoundError when there is none,
    LatentSamplerFileError naming the file when it is unreadable or written by another pyromm."""
    path = Path(run_dir) / LATENT_SAMPLER_FILE
    if not path.is_file():
        raise FileNotFoundError(2, "no latent sampler stored (it is written when the run is evaluated)", str(path))
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        if record.get("format") != FORMAT:
            raise LatentSamplerFileError(
                f"{path} has format {record.get('format')!r}, this pyromm reads {FORMAT}: evaluate the run again "
                "to write it anew"
            )
        cls = latent_samplers.LATENT_SAMPLERS[record["kind"]]
        fitted_on = {"checkpoint": record["checkpoint"], "weights": record["weights"]}
        return cls.from_state(record["state"], seed=record["seed"]), fitted_on
    except LatentSamplerFileError:
        raise
    except Exception as err:
        raise LatentSamplerFileError(
            f"cannot read the latent sampler {path} ({type(err).__name__}: {err}); fit it again with "
            "pyromm.generation.fit_generation_sampler and save it with save_latent_sampler"
        ) from err


def load_latent_sampler(run_dir: str | os.PathLike) -> LatentSampler:
    """The sampler stored in ``run_dir/latent_sampler.pt`` (see :func:`read_latent_sampler`)."""
    return read_latent_sampler(run_dir)[0]


def attach_stored_latent_sampler(run_dir: str | os.PathLike, model: nn.Module, checkpoint: str | None) -> None:
    """Attach ``run_dir``'s stored sampler to a model that generates through one, when it was fitted on the
    model's weights (``checkpoint`` names where they were loaded from); otherwise record why there is none, which
    ``model.sample`` reports. Models with an unconditional prior are left alone."""
    if not needs_latent_sampler(model):
        return
    run_dir = Path(run_dir)
    if not (run_dir / LATENT_SAMPLER_FILE).is_file():
        model.attach_latent_sampler(
            None,
            f"{run_dir} stores no {LATENT_SAMPLER_FILE}, which evaluation writes unless store_latent_sampler is false",
        )
        return
    try:
        sampler, fitted_on = read_latent_sampler(run_dir)
    except LatentSamplerFileError as err:
        model.attach_latent_sampler(None, str(err))
        return
    if fitted_on["weights"] != state_checksum(model.state_dict()):
        fitted = fitted_on["checkpoint"]
        why = (
            f"was fitted on the weights {fitted} held then, and {fitted} holds other weights now"
            if fitted == checkpoint
            else f"was fitted on the weights of {fitted}, the loaded model holds those of {checkpoint}"
        )
        model.attach_latent_sampler(
            None, f"{run_dir / LATENT_SAMPLER_FILE} {why}: evaluate the run again or fit a new one"
        )
        return
    model.attach_latent_sampler(sampler)


def fit_and_save_latent_sampler(
    model: nn.Module,
    train_set: MultimodalDataset,
    run_dir: str | os.PathLike,
    kind: str = "gmm",
    *,
    checkpoint: str | None = None,
    num_train: int = 10000,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> LatentSampler | None:
    """For a model that generates through a fitted latent sampler: :func:`fit_generation_sampler` (attached), then
    :func:`save_latent_sampler` to ``run_dir`` with ``checkpoint``; returns it. None, and nothing written, for a
    model with an unconditional prior."""
    if not needs_latent_sampler(model):
        return None
    sampler = fit_generation_sampler(
        model, train_set, kind, num_train=num_train, batch_size=batch_size, generator=generator
    )
    save_latent_sampler(run_dir, sampler, model, checkpoint)
    return sampler
