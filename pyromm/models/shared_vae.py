"""Multimodal VAEs with one shared latent: AVG, PoE/MVAE, MoE, MoPoE, MVTCAE as guide combinators."""
from __future__ import annotations

from functools import partial
from typing import Callable, Mapping, Sequence

import torch
import pyro
import pyro.distributions as dist

from pyromm import aggregation
from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import MultimodalNetworks, check_subset, observed_only, scaled
from pyromm.models.joint_sampling import JointSampling
from pyromm.models.modality import Modality

AGGREGATIONS: dict[str, Callable] = {
    "avg": aggregation.average,
    "poe": aggregation.product_of_experts,
    "poe_prior": partial(aggregation.product_of_experts, prior_expert=True),
    "moe": aggregation.mixture_of_experts,
    "mopoe": aggregation.mixture_of_products,
    "mopoe_noprior": partial(aggregation.mixture_of_products, prior_expert="none"),
}
# The model options each named aggregation takes: stratified blocks (MoE, MoPoE) and the model's modalities (MoPoE).
AGGREGATION_OPTIONS: dict[str, tuple[str, ...]] = {
    "moe": ("blocks",),
    "mopoe": ("blocks", "modalities"),
    "mopoe_noprior": ("blocks", "modalities"),
}


class SharedLatentVAE(JointSampling, MultimodalNetworks):
    r"""p(X, z) = N(z; 0, I) Π_m p(x_m | z), guide q(z | X_S) = aggregate_{m ∈ S ∩ O} q_m(z | x_m).

    ``aggregation`` names a combinator of :mod:`pyromm.aggregation` (``avg``, ``poe``, ``poe_prior``,
    ``moe``, ``mopoe``, ``mopoe_noprior``) or is a callable ``(posteriors, mask) -> distribution``.
    Every decoder decodes the one z (site ``z``); masked modalities leave the aggregate and the likelihood
    (sites ``x_<m>``). ``rate_scale`` c multiplies β on the site ``z`` of both programs: 1, or
    ``'modalities'`` for c = M, as the MMVM reference code's joint baselines (they add the same KL once per
    modality).
    A named combinator that takes them gets the model's modality names (so MoPoE's prior expert joins only
    the subset of every modality of the model, whatever subset ``infer`` conditions on) and ``blocks``, the
    stratified block rule of MoE/MoPoE (``"even"``, or the MMVM code's ``"remainder_last"``).
    """

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent_dim: int,
        aggregation: str | Callable = "poe",
        posterior: str = "normal",
        rate_scale: float | str = 1.0,
        blocks: str = "even",
    ) -> None:
        super().__init__(modalities, latent_dim, posterior)
        if rate_scale != "modalities" and (isinstance(rate_scale, (bool, str)) or not rate_scale >= 0):
            raise ValueError(f"rate_scale must be a number >= 0 or 'modalities', got {rate_scale!r}")
        self.rate_scale = float(len(modalities)) if rate_scale == "modalities" else float(rate_scale)
        if isinstance(aggregation, str):
            if aggregation not in AGGREGATIONS:
                raise ValueError(f"unknown aggregation {aggregation!r}; choose from {sorted(AGGREGATIONS)}")
            self.aggregation_name = aggregation
            self.aggregate = _bind_model_options(AGGREGATIONS[aggregation], aggregation, self.modality_names, blocks)
        else:
            self.aggregation_name, self.aggregate = getattr(aggregation, "__name__", repr(aggregation)), aggregation

    def prior(self, batch: MultimodalBatch) -> dist.Independent:
        """p(z) = N(0, I) for every sample of the batch."""
        zeros = torch.zeros(batch.batch_size, self.latent_dim, device=batch.device)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def sample_prior(self, n: int) -> torch.Tensor:
        """n draws z ~ p(z) = N(0, I), shape ``(n, D)``, on the model's device."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, device=device)

    def joint_latents(self, n: int) -> dict[str, torch.Tensor]:
        """One z ~ ``sample_prior(n)`` taken by every decoder (``sample(n)`` decodes it)."""
        return dict.fromkeys(self.modality_names, self.sample_prior(n))

    def joint(
        self, batch: MultimodalBatch, subset: Sequence[str] | None = None, mask: Mapping | None = None
    ) -> dist.TorchDistribution:
        """q(z | X_S), aggregated over the modalities of ``subset`` (default: all in the batch) observed per
        sample; ``mask`` overrides ``batch.mask`` (the encoders still run once per batch object)."""
        names = list(batch.data) if subset is None else check_subset(subset, self.modality_names)
        posteriors = self.encode(batch)
        missing = [n for n in names if n not in posteriors]
        if missing:
            raise KeyError(f"modality {missing[0]!r} is not in the batch (batch has {batch.modalities})")
        return self.aggregate({n: posteriors[n] for n in names}, batch.mask if mask is None else mask)

    def infer(self, batch: MultimodalBatch, subset: Sequence[str]) -> dist.TorchDistribution:
        """q(z | X_S), the posterior every decoder conditions on."""
        return self.joint(batch.select(check_subset(subset, self.modality_names)))

    def reconstruct(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        """p(x_m | z) for every modality, one z ~ q(z | X) shared by all decoders."""
        z = self.joint(batch).sample()
        return {name: self.decode(name, z) for name in batch.data}

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z ~ N(0, I) scaled by c·β, x_m ~ p(x_m | z) scaled by w_m for the observed samples."""
        hyper = {} if hyper is None else hyper
        self.register()
        with pyro.plate("data", batch.batch_size):
            with scaled(self.rate_scale * hyper.get("beta", 1.0)):
                z = pyro.sample("z", self.prior(batch))
            self.observe(batch, z, list(batch.data))

    def observe(
        self, batch: MultimodalBatch, z: torch.Tensor, names: Sequence[str], suffix: str = "", stratum: str | None = None
    ) -> None:
        """x_m ~ p(x_m | z) (sites ``x_<m><suffix>``, in ``stratum`` when given) scaled by w_m, masked where x_m is
        missing."""
        infer = {} if stratum is None else {"stratum": stratum}
        for name in names:
            with observed_only(batch.observed(name)), scaled(self.modalities[name].weight):
                pyro.sample(f"x_{name}{suffix}", self.decode(name, z), obs=batch.data[name], infer=dict(infer))

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z ~ q(z | X), scaled by c·β."""
        hyper = {} if hyper is None else hyper
        self.register()
        with pyro.plate("data", batch.batch_size), scaled(self.rate_scale * hyper.get("beta", 1.0)):
            pyro.sample("z", self.joint(batch))

    def config(self) -> dict:
        return {**super().config(), "aggregation": self.aggregation_name, "rate_scale": self.rate_scale}


def _bind_model_options(aggregate: Callable, name: str, modalities: Sequence[str], blocks: str) -> Callable:
    """``aggregate`` with the model's ``modalities`` and the ``blocks`` rule bound where :data:`AGGREGATION_OPTIONS`
    says it takes them; ValueError for a block rule other than ``"even"`` asked of an aggregation without blocks."""
    accepted = AGGREGATION_OPTIONS.get(name, ())
    options: dict = {"modalities": tuple(modalities)} if "modalities" in accepted else {}
    if "blocks" in accepted:
        options["blocks"] = aggregation.check_blocks(blocks)
    elif blocks != "even":
        raise ValueError(f"aggregation {name!r} has no stratified blocks; blocks={blocks!r} applies to 'moe' and 'mopoe'")
    return partial(aggregate, **options) if options else aggregate
