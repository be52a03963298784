"""What every multimodal model shares: per-modality encoders, decoders, likelihoods and input checks."""
from __future__ import annotations

from contextlib import nullcontext
from itertools import chain
from typing import ContextManager, Sequence

import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.handlers import shared
from pyromm.models.modality import Modality

POSTERIORS = ("normal", "laplace")
MIN_SCALE = 1e-6


class MultimodalNetworks(nn.Module):
    r"""Encoders q_m(z | x_m) and decoders p(x_m | z) of named modalities.

    ``posterior='normal'``: q_m = N(loc, diag σ²) with σ = exp(log_var / 2) + ``scale_floor`` from the
    encoder's ``(loc, log_var)``. ``scale_floor`` is an attribute, 1e-6 by default (it keeps σ > 0 where exp
    underflows); 0 gives the references' σ = exp(log_var / 2). With the attribute ``posterior_head = 'log_std'``
    the second output is read as log σ instead: σ = exp(log_std) + 1e-6 (the MMVM rats code's encoders, their 1e-6
    included; ``scale_floor`` is then unused).
    ``posterior='laplace'``: q_m = Laplace(loc, s) with s = softmax(second output)·D + 1e-6, the scale
    constraint of MMVAE/MMVAE+ (their 1e-6 included).
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, posterior: str = "normal") -> None:
        super().__init__()
        names = [m.name for m in modalities]
        if not names:
            raise ValueError("a multimodal model needs at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        self.modalities = {m.name: m for m in modalities}
        self.encoders = nn.ModuleDict({m.name: m.encoder for m in modalities})
        self.decoders = nn.ModuleDict({m.name: m.decoder for m in modalities})
        self.latent_dim = int(latent_dim)
        self.posterior = posterior
        self.scale_floor = MIN_SCALE
        self.posterior_head = "log_var"

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters and buffers (the CPU for a model without any)."""
        tensor = next(chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def modality_weights(self) -> dict[str, float]:
        return {name: m.weight for name, m in self.modalities.items()}

    def check_batch(self, batch: MultimodalBatch) -> None:
        """Raise a named error for unknown modalities, bad shapes/dtypes/values or fully masked samples."""
        for name, x in batch.data.items():
            if name not in self.modalities:
                raise KeyError(f"unknown modality {name!r}; the model has {self.modality_names}")
            self.modalities[name].check_data(x)
        if batch.mask is not None:
            observed = torch.stack(
                [batch.mask.get(n, torch.ones(batch.batch_size, dtype=torch.bool, device=batch.device)) for n in batch.data]
            ).any(0)
            if not bool(observed.all()):
                raise ValueError(f"sample {int((~observed).nonzero()[0])} of the batch has every modality masked")
        with torch.no_grad():
            for name, x in batch.data.items():
                loc, second = self.encoders[name](x[:1])
                if loc.shape != (1, self.latent_dim) or second.shape != (1, self.latent_dim):
                    raise ValueError(
                        f"modality {name!r}: encoder returned shapes {tuple(loc.shape)}, {tuple(second.shape)}; "
                        f"expected (N, {self.latent_dim}) each"
                    )
                params = self.decoders[name](loc)
                expected = (1, *self.modalities[name].event_shape)
                if tuple(params.shape[: len(expected)]) != expected:
                    raise ValueError(
                        f"modality {name!r}: decoder returned shape {tuple(params.shape)}, expected {expected}"
                    )

    def check_dataset(self, dataset, chunk_size: int = 4096) -> None:
        """:meth:`check_batch` on the first sample, then every modality's data checked over the whole dataset
        (names, shapes, dtype and range for its likelihood, NaN/inf), chunk by chunk."""
        self.check_batch(dataset.batch(slice(0, 1)).to(self.device))
        for start in range(0, len(dataset), chunk_size):
            chunk = dataset.batch(slice(start, start + chunk_size))
            for name, x in chunk.data.items():
                try:
                    self.modalities[name].check_data(x)
                except (TypeError, ValueError) as err:
                    raise type(err)(f"{err} (in samples {start}..{start + x.shape[0] - 1})") from None

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.Independent]:
        """q_m(z | x_m) for each modality in the batch (see the class docstring for the parameterisation); run once
        per batch within one ELBO evaluation (:func:`pyromm.handlers.shared`)."""
        return shared("encode", (self, batch), lambda: self._encode(batch))

    def register(self) -> None:
        """``pyro.module("pyromm_vae", self)``: the parameters as Pyro params, once per ELBO evaluation
        (:func:`pyromm.handlers.shared`), so that SVI and pyro.optim find them."""
        shared("pyro.module", (self,), lambda: pyro.module("pyromm_vae", self))

    def _encode(self, batch: MultimodalBatch) -> dict[str, dist.Independent]:
        """The encoders on every modality of the batch, without memoisation."""
        return {name: self.posterior_of(*self.encoders[name](x)) for name, x in batch.data.items()}

    def posterior_of(self, loc: Tensor, second: Tensor) -> dist.Independent:
        """The posterior distribution from an encoder's two outputs (in at least float32)."""
        loc, second = at_least_float32(loc), at_least_float32(second)
        if self.posterior == "laplace":
            scale = torch.softmax(second, dim=-1) * second.shape[-1] + MIN_SCALE
            return dist.Laplace(loc, scale, validate_args=False).to_event(1)
        if self.posterior_head == "log_std":
            return dist.Normal(loc, torch.exp(second) + MIN_SCALE, validate_args=False).to_event(1)
        return dist.Normal(loc, torch.exp(0.5 * second) + self.scale_floor, validate_args=False).to_event(1)

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        """p(x_name | z) for z of shape ``(*sample, B, D)``: the decoder sees ``(N, D)``; its output, in at least
        float32, parameterises the likelihood."""
        params = at_least_float32(self.decoders[name](z.reshape(-1, z.shape[-1])))
        params = params.reshape(*z.shape[:-1], *params.shape[1:])
        return self.modalities[name].likelihood.distribution(params)

    def config(self) -> dict:
        return {
            "family": type(self).__name__,
            "latent_dim": self.latent_dim,
            "posterior": self.posterior,
            "modalities": {
                n: {"event_shape": list(m.event_shape), "weight": m.weight, "likelihood": m.likelihood.config()}
                for n, m in self.modalities.items()
            },
        }


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` itself in float32 or wider, else (bf16/fp16 network outputs under autocast) cast to float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_subset(subset: Sequence[str], names: Sequence[str]) -> list[str]:
    """``subset`` as a list, after checking it is non-empty and names only known modalities."""
    subset = list(subset)
    if not subset:
        raise ValueError("the subset of modalities is empty")
    unknown = [n for n in subset if n not in names]
    if unknown:
        raise KeyError(f"unknown modality {unknown[0]!r} in subset; the model has {list(names)}")
    return subset


def observed_only(observed: Tensor | None) -> ContextManager:
    """poutine.mask over the observed samples, or nothing when all are observed."""
    return nullcontext() if observed is None else poutine.mask(mask=observed)


def scaled(scale: float | Tensor) -> ContextManager:
    """poutine.scale by ``scale`` >= 0; a zero number (β at the start of a warm-up) masks the sites instead, since
    Pyro's scale must be positive. A tensor scale (per-run hypers of vectorised runs) is used as it is."""
    if isinstance(scale, Tensor):
        return poutine.scale(scale=scale)
    return poutine.mask(mask=False) if scale == 0 else poutine.scale(scale=scale)
