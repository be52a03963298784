"""Multimodal VAEs with one latent per modality: independent VAEs, the MMVM VAE, user priors."""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import pyro
import pyro.distributions as dist
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import MultimodalNetworks, check_subset, observed_only, scaled
from pyromm.models.joint_sampling import JointSampling, LatentSampler, NoLatentSamplerError
from pyromm.models.modality import Modality
from pyromm.models.priors import MMVMPrior, standard_normal


@runtime_checkable
class ConditionalPrior(Protocol):
    """h(z_m | ·) of every modality's latent from the unimodal posteriors, the batch and the schedule values:
    one distribution for every modality, or a mapping modality → distribution."""

    def __call__(
        self, posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, hyper: Mapping[str, float]
    ) -> "dist.TorchDistribution | Mapping[str, dist.TorchDistribution]": ...


class MultimodalVAE(JointSampling, MultimodalNetworks):
    r"""p(X, Z) = Π_m p(x_m | z_m) · h(z_m | ·), guide q(Z | X) = Π_m q_m(z_m | x_m).

    Each modality m has its own latent z_m (site ``z_<m>``), encoder and decoder (site ``x_<m>``).
    ``conditional_prior`` (a :class:`ConditionalPrior`) gives h: N(0, I) for independent VAEs,
    :class:`MMVMPrior` for the MMVM VAE. ``model``/``guide`` are the model: train them with any ELBO of
    :mod:`pyromm.infer` (``RateELBO('jensen')`` is the MMVM reference code's objective).

    ``sample(n)`` draws [z_1; …; z_M] from the latent sampler attached with ``attach_latent_sampler`` (fitted on
    training latents: ``pyromm.generation.fit_generation_sampler``, or stored with a run and attached by
    ``pyromm.load``): h is data-dependent, and N(0, I) for each z_m alone would generate independent modalities.
    """

    def __init__(
        self, modalities: Sequence[Modality], latent_dim: int, conditional_prior: ConditionalPrior = standard_normal
    ) -> None:
        super().__init__(modalities, latent_dim)
        if not callable(conditional_prior):
            raise TypeError(f"conditional_prior must be callable (posteriors, batch, hyper), got {conditional_prior!r}")
        self.conditional_prior = conditional_prior
        self.attach_latent_sampler(None, "none was fitted or loaded")

    @property
    def latent_sampler(self) -> LatentSampler | None:
        """The sampler of [z_1; …; z_M] that ``sample`` draws from (None until one is attached)."""
        return self.__dict__["_latent_sampler"]

    def attach_latent_sampler(self, sampler: LatentSampler | None, missing_reason: str = "") -> None:
        """Make ``sample`` draw [z_1; …; z_M] from ``sampler`` (``sample(n) -> (n, M·D)``); kept outside the
        module's parameters and state dict. With None, ``missing_reason`` says why there is none."""
        self.__dict__["_latent_sampler"] = sampler
        self.__dict__["_latent_sampler_missing"] = missing_reason

    def joint_latents(self, n: int) -> dict[str, Tensor]:
        """z_m of every modality, the slices of n draws [z_1; …; z_M] of the attached latent sampler."""
        if self.latent_sampler is None:
            raise NoLatentSamplerError(
                f"{type(self).__name__} with conditional prior {self.config()['conditional_prior']} has no "
                "unconditional prior, so sample() draws its latents from a sampler fitted on training latents, and "
                f"none is attached ({self.__dict__['_latent_sampler_missing']}): fit one with "
                "pyromm.generation.fit_generation_sampler(model, train_set, kind='gmm' or 'maf'), or load a run that "
                "stores one (latent_sampler.pt, written when the run is evaluated) with pyromm.load(run_dir)"
            )
        return self.split_latents(self.latent_sampler.sample(n).to(self.device))

    def split_latents(self, z: Tensor) -> dict[str, Tensor]:
        """Slice m of [z_1; …; z_M] ``(..., M·D)`` for every modality m: the latent decoder m takes."""
        names = self.modality_names
        if z.shape[-1] != len(names) * self.latent_dim:
            raise ValueError(
                f"a draw of {z.shape[-1]} values does not split into {len(names)} latents of {self.latent_dim}: "
                "was the sampler fitted on this model's training latents (pyromm.evaluation.training_latents)?"
            )
        return dict(zip(names, z.split(self.latent_dim, dim=-1)))

    def conditional_priors(
        self, posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, hyper: Mapping[str, float]
    ) -> dict[str, dist.TorchDistribution]:
        """h(z_m | ·) of every modality in ``posteriors``, from ``self.conditional_prior``."""
        prior = self.conditional_prior(posteriors, batch, hyper)
        if isinstance(prior, Mapping):
            missing = [n for n in posteriors if n not in prior]
            if missing:
                raise KeyError(f"the conditional prior returned no distribution for modality {missing[0]!r}")
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
        """z_m ~ h(z_m | ·) scaled by β, x_m ~ p(x_m | z_m) scaled by w_m, both masked where x_m is missing."""
        hyper = {} if hyper is None else hyper
        self.register()
        priors = self.conditional_priors(self.encode(batch), batch, hyper)
        beta = hyper.get("beta", 1.0)
        with pyro.plate("data", batch.batch_size):
            for name, x in batch.data.items():
                with observed_only(batch.observed(name)):
                    with scaled(beta):
                        z = pyro.sample(f"z_{name}", priors[name])
                    with scaled(self.modalities[name].weight):
                        pyro.sample(f"x_{name}", self.decode(name, z), obs=x)

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z_m ~ q_m(z_m | x_m), scaled by β, masked where x_m is missing."""
        hyper = {} if hyper is None else hyper
        self.register()
        beta = hyper.get("beta", 1.0)
        with pyro.plate("data", batch.batch_size):
            for name, q in self.encode(batch).items():
                with observed_only(batch.observed(name)), scaled(beta):
                    pyro.sample(f"z_{name}", q)

    def config(self) -> dict:
        prior = getattr(self.conditional_prior, "__name__", None) or repr(self.conditional_prior)
        return {**super().config(), "conditional_prior": prior}


def independent_vaes(modalities: Sequence[Modality], latent_dim: int) -> MultimodalVAE:
    """M independent VAEs: h(z_m) = N(0, I)."""
    return MultimodalVAE(modalities, latent_dim, conditional_prior=standard_normal)


def mmvm_vae(modalities: Sequence[Modality], latent_dim: int, alpha: float = 0.0) -> MultimodalVAE:
    """The MMVM VAE: h(z_m | X) = α N(0, I) + (1 − α)/M Σ_m' q_m'(z_m | x_m')."""
    return MultimodalVAE(modalities, latent_dim, conditional_prior=MMVMPrior(alpha))
