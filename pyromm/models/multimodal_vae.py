"""Multimodal VAEs with one latent per modality: independent VAEs, the MMVM VAE, user priors."""
from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Mapping, Sequence

import torch
import pyro
import pyro.distributions as dist
from pyro import poutine
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.models.modality import Modality
from pyromm.models.priors import MMVMPrior, standard_normal

Prior = Callable[..., "dist.TorchDistribution | Mapping[str, dist.TorchDistribution]"]


class MultimodalVAE(nn.Module):
    r"""p(X, Z) = Π_m p(x_m | z_m) · h(z_m | ·), guide q(Z | X) = Π_m q_m(z_m | x_m).

    Each modality m has its own latent z_m, encoder and decoder. The prior h is a function of the
    unimodal posteriors and the batch (``prior(posteriors, batch[, hyper])``): N(0, I) gives independent
    VAEs, :class:`MMVMPrior` the MMVM VAE. ``model``/``guide`` are the same model as Pyro programs.
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, prior: Prior = standard_normal) -> None:
        super().__init__()
        names = [m.name for m in modalities]
        if not names:
            raise ValueError("a multimodal VAE needs at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.modalities = {m.name: m for m in modalities}
        self.encoders = nn.ModuleDict({m.name: m.encoder for m in modalities})
        self.decoders = nn.ModuleDict({m.name: m.decoder for m in modalities})
        self.latent_dim = int(latent_dim)
        self.prior = prior
        self._prior_takes_hyper = _accepts_three_args(prior)
        self._cache: tuple[MultimodalBatch, dict[str, dist.Independent]] | None = None
        self._caching = False

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
                loc, log_var = self.encoders[name](x[:1])
                if loc.shape != (1, self.latent_dim) or log_var.shape != (1, self.latent_dim):
                    raise ValueError(
                        f"modality {name!r}: encoder returned shapes {tuple(loc.shape)}, {tuple(log_var.shape)}; "
                        f"expected (N, {self.latent_dim}) each"
                    )
                params = self.decoders[name](loc)
                expected = (1, *self.modalities[name].event_shape)
                if tuple(params.shape[: len(expected)]) != expected:
                    raise ValueError(
                        f"modality {name!r}: decoder returned shape {tuple(params.shape)}, expected {expected}"
                    )

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.Independent]:
        """q_m(z_m | x_m) = N(μ_m(x_m), diag exp(log_var_m(x_m))) for each modality in the batch."""
        if self._caching and self._cache is not None and self._cache[0] is batch:
            return self._cache[1]
        posteriors = {}
        for name, x in batch.data.items():
            loc, log_var = self.encoders[name](x)
            posteriors[name] = dist.Normal(loc, torch.exp(0.5 * log_var), validate_args=False).to_event(1)
        if self._caching:
            self._cache = (batch, posteriors)
        return posteriors

    @contextmanager
    def cached_encoding(self) -> Iterator[None]:
        """Within this context, ``encode`` of the same batch object runs the encoders once."""
        self._caching, self._cache = True, None
        try:
            yield
        finally:
            self._caching, self._cache = False, None

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        """p(x_name | z) for z of shape ``(*sample, B, D)``: the decoder sees ``(N, D)``."""
        modality = self.modalities[name]
        params = self.decoders[name](z.reshape(-1, z.shape[-1]))
        params = params.reshape(*z.shape[:-1], *params.shape[1:])
        return modality.likelihood.distribution(params)

    def priors(
        self, posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, hyper: Mapping[str, float]
    ) -> dict[str, dist.TorchDistribution]:
        """The prior of every modality's latent, from ``self.prior``."""
        prior = self.prior(posteriors, batch, hyper) if self._prior_takes_hyper else self.prior(posteriors, batch)
        if isinstance(prior, Mapping):
            missing = [n for n in posteriors if n not in prior]
            if missing:
                raise KeyError(f"prior returned no distribution for modality {missing[0]!r}")
            return {n: prior[n] for n in posteriors}
        return {n: prior for n in posteriors}

    def infer(self, batch: MultimodalBatch, subset: Sequence[str]) -> dist.TorchDistribution:
        """q(z | X_S): the unimodal posterior for |S| = 1, the uniform mixture 1/|S| Σ_{m∈S} q_m otherwise."""
        subset = _check_subset(subset, self.modality_names)
        posteriors = self.encode(batch.select(subset))
        if len(subset) == 1:
            return posteriors[subset[0]]
        return MMVMPrior(alpha=0.0)(posteriors, batch, {})

    def reconstruct(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        """p(x_m | z_m), z_m ~ q_m(z_m | x_m), for each modality: the joint reconstruction."""
        return {name: self.decode(name, q.sample()) for name, q in self.encode(batch).items()}

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Pyro model: z_m ~ h(z_m | ·) scaled by β, x_m ~ p(x_m | z_m) scaled by w_m, masked where missing."""
        hyper = {} if hyper is None else hyper
        pyro.module("pyromm_vae", self)
        posteriors = self.encode(batch)
        priors = self.priors(posteriors, batch, hyper)
        beta = hyper.get("beta", 1.0)
        with pyro.plate("data", batch.batch_size):
            for name, x in batch.data.items():
                with _observed_only(batch.observed(name)):
                    with poutine.scale(scale=beta):
                        z = pyro.sample(f"z_{name}", priors[name])
                    with poutine.scale(scale=self.modalities[name].weight):
                        pyro.sample(f"x_{name}", self.decode(name, z), obs=x)

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Pyro guide: z_m ~ q_m(z_m | x_m), scaled by β, masked where missing."""
        hyper = {} if hyper is None else hyper
        pyro.module("pyromm_vae", self)
        posteriors = self.encode(batch)
        beta = hyper.get("beta", 1.0)
        with pyro.plate("data", batch.batch_size):
            for name, q in posteriors.items():
                with _observed_only(batch.observed(name)), poutine.scale(scale=beta):
                    pyro.sample(f"z_{name}", q)

    def config(self) -> dict:
        return {
            "family": type(self).__name__,
            "latent_dim": self.latent_dim,
            "prior": repr(self.prior) if not inspect.isfunction(self.prior) else self.prior.__name__,
            "modalities": {
                n: {"event_shape": list(m.event_shape), "weight": m.weight, "likelihood": m.likelihood.config()}
                for n, m in self.modalities.items()
            },
        }


def independent_vaes(modalities: Sequence[Modality], latent_dim: int) -> MultimodalVAE:
    """M independent VAEs: h(z_m) = N(0, I)."""
    return MultimodalVAE(modalities, latent_dim, prior=standard_normal)


def mmvm_vae(modalities: Sequence[Modality], latent_dim: int, alpha: float = 0.0) -> MultimodalVAE:
    """The MMVM VAE: h(z_m | X) = α N(0, I) + (1 − α)/M Σ_m' q_m'(z_m | x_m')."""
    return MultimodalVAE(modalities, latent_dim, prior=MMVMPrior(alpha))


def _observed_only(observed: Tensor | None):
    """poutine.mask over the observed samples, or nothing when all are observed."""
    return nullcontext() if observed is None else poutine.mask(mask=observed)


def _check_subset(subset: Sequence[str], names: Sequence[str]) -> list[str]:
    subset = list(subset)
    if not subset:
        raise ValueError("the subset of modalities is empty")
    unknown = [n for n in subset if n not in names]
    if unknown:
        raise KeyError(f"unknown modality {unknown[0]!r} in subset; the model has {list(names)}")
    return subset


def _accepts_three_args(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
