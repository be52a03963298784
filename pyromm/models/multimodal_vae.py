"""Multimodal VAEs with one latent per modality: independent VAEs, the MMVM VAE, user priors."""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Callable, Mapping, Sequence

import pyro
import pyro.distributions as dist
from pyro import poutine
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import MultimodalNetworks, check_subset
from pyromm.models.modality import Modality
from pyromm.models.priors import MMVMPrior, standard_normal

Prior = Callable[..., "dist.TorchDistribution | Mapping[str, dist.TorchDistribution]"]


class MultimodalVAE(MultimodalNetworks):
    r"""p(X, Z) = Π_m p(x_m | z_m) · h(z_m | ·), guide q(Z | X) = Π_m q_m(z_m | x_m).

    Each modality m has its own latent z_m, encoder and decoder. The prior h is a function of the
    unimodal posteriors and the batch (``prior(posteriors, batch[, hyper])``): N(0, I) gives independent
    VAEs, :class:`MMVMPrior` the MMVM VAE. ``model``/``guide`` are the same model as Pyro programs.
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, prior: Prior = standard_normal) -> None:
        super().__init__(modalities, latent_dim)
        self.prior = prior
        self._prior_takes_hyper = _accepts_three_args(prior)

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
        subset = check_subset(subset, self.modality_names)
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
        prior = self.prior.__name__ if inspect.isfunction(self.prior) else repr(self.prior)
        return {**super().config(), "prior": prior}


def independent_vaes(modalities: Sequence[Modality], latent_dim: int) -> MultimodalVAE:
    """M independent VAEs: h(z_m) = N(0, I)."""
    return MultimodalVAE(modalities, latent_dim, prior=standard_normal)


def mmvm_vae(modalities: Sequence[Modality], latent_dim: int, alpha: float = 0.0) -> MultimodalVAE:
    """The MMVM VAE: h(z_m | X) = α N(0, I) + (1 − α)/M Σ_m' q_m'(z_m | x_m')."""
    return MultimodalVAE(modalities, latent_dim, prior=MMVMPrior(alpha))


def _observed_only(observed: Tensor | None):
    """poutine.mask over the observed samples, or nothing when all are observed."""
    return nullcontext() if observed is None else poutine.mask(mask=observed)


def _accepts_three_args(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
