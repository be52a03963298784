r"""Subset posteriors π_S(z) ∝ ∏_{m∈S} q_m(z | x_m) / p(z)^c built from cached unimodal posteriors.

The target of a subset S of modalities is

    log π_S(z) = Σ_{m∈S} log q_m(z | x_m) − c · log p(z),

with c = |S| − 1 (``prior_power='subset'``, the product of experts: if q_m(z | x_m) ∝ p(x_m | z) p(z) and
the modalities are conditionally independent given z, π_S ∝ p(z | x_S)), c = 1 (``prior_power='once'``, the
reference JNF code, which divides by the prior once whatever |S|; both agree for |S| = 2)
or c = 0 (``prior_power='none'``, the product of the experts alone: JMVAE's analytic subset rule).

Every member log q_m is a closure over encoder outputs computed once (``from_posteriors`` / ``from_model``),
so a gradient step of a sampler evaluates densities only and never re-runs an encoder. A target holds B
independent posteriors, one per test sample: z of shape ``(..., B, D)`` gives log π of shape ``(..., B)``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import check_subset

PRIOR_POWERS = ("subset", "once", "none")

LogDensity = Callable[[Tensor], Tensor]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block on torch's global generators (CPU and CUDA) seeded with ``seed``, restoring them afterwards.

    ``seed=None`` runs the block on the global generators as they stand.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield


class SubsetTarget:
    r"""Unnormalised log-density log π_S(z) = Σ_{m∈S} log q_m(z | x_m) − c · log p(z) of a subset posterior.

    Args:
        log_densities: the members log q_m, callables ``z (..., B, D) -> (..., B)`` that broadcast z over the
            target dimension as ``Distribution.log_prob`` does; a mapping names them (used in error messages).
        prior: p(z), a distribution with event shape ``(D,)`` (batch shape ``()`` or ``(B,)``) or a log-density
            callable with the members' signature.
        prior_power: ``'subset'`` (c = |S| − 1, the product of experts), ``'once'`` (c = 1, the JNF reference)
            or ``'none'`` (c = 0, the experts' product without the prior).
    """

    def __init__(
        self,
        log_densities: Mapping[str, LogDensity] | Sequence[LogDensity],
        prior: Distribution | LogDensity,
        prior_power: str = "subset",
    ) -> None:
        if not isinstance(log_densities, Mapping):
            log_densities = {str(i): f for i, f in enumerate(log_densities)}
        if not log_densities:
            raise ValueError("the subset of modalities is empty: a subset target needs at least one member")
        if prior_power not in PRIOR_POWERS:
            raise ValueError(f"prior_power must be one of {PRIOR_POWERS}, got {prior_power!r}")
        self.members: dict[str, LogDensity] = dict(log_densities)
        self.prior = prior
        self._log_prior = cached_log_density(prior) if isinstance(prior, Distribution) else prior
        self.prior_power = prior_power
        self.posteriors: dict[str, Distribution] | None = None

    @classmethod
    def from_posteriors(
        cls,
        posteriors: Mapping[str, Distribution],
        subset: Sequence[str],
        prior: Distribution,
        prior_power: str = "subset",
    ) -> "SubsetTarget":
        """The target of ``subset`` from already computed unimodal posteriors (batch shape (B,), event (D,)).

        The distributions are the cache: evaluating the target calls their log-densities
        (``cached_log_density``). Build them without gradient tracking of the encoders (``torch.no_grad()``)
        unless that is wanted.
        """
        subset = check_subset(subset, list(posteriors))
        target = cls({m: cached_log_density(posteriors[m]) for m in subset}, prior, prior_power)
        target.posteriors = {m: posteriors[m] for m in subset}
        return target

    @classmethod
    def from_model(
        cls, model, batch: MultimodalBatch, subset: Sequence[str], prior_power: str = "subset"
    ) -> "SubsetTarget":
        """The target of ``subset`` for every sample of ``batch``: encodes once, without gradients.

        ``model`` follows the inference contract (``modality_names``, ``encode``, ``prior``); every sample must
        observe every modality of the subset.
        """
        subset = check_subset(subset, model.modality_names)
        for m in subset:
            observed = batch.observed(m)
            if observed is not None and not bool(observed.all()):
                raise ValueError(f"modality {m!r} of the subset is missing in {int((~observed).sum())} samples")
        with torch.no_grad():
            posteriors = model.encode(batch.select(subset))
            prior = model.prior(batch)
        return cls.from_posteriors(posteriors, subset, prior, prior_power)

    @property
    def prior_exponent(self) -> int:
        """c in log π_S = Σ log q_m − c · log p."""
        return {"subset": len(self.members) - 1, "once": 1, "none": 0}[self.prior_power]

    def terms(self, z: Tensor) -> dict[str, Tensor]:
        """Each member's log q_m(z | x_m) and log p(z) (not yet multiplied by −c), keyed by a readable name."""
        out = {f"log q_{m}(z | x_{m})": f(z) for m, f in self.members.items()}
        out["log p(z)"] = self._log_prior(z)
        return out

    def log_prob(self, z: Tensor) -> Tensor:
        """log π_S(z) for z of shape ``(..., B, D)``; returns ``(..., B)``."""
        total = sum(f(z) for f in self.members.values())
        c = self.prior_exponent
        return total - c * self._log_prior(z) if c else total

    __call__ = log_prob

    def check_finite(self, z: Tensor) -> None:
        """Raise a ValueError naming the term and the position where log π_S(z) is NaN or infinite."""
        for name, value in self.terms(z).items():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                position = tuple(bad.nonzero()[0].tolist())
                raise ValueError(
                    f"subset target: {name} is {value[position].item()} at the initial point, position "
                    f"{position} of batch shape {tuple(value.shape)} ({int(bad.sum())} non-finite in all); "
                    "the sampler cannot start there"
                )

    def select(self, index: int) -> "SubsetTarget":
        """Target ``index`` alone: a target mapping z of shape ``(..., D)`` to ``(...)``."""

        def pick(f: LogDensity) -> LogDensity:
            def picked(z: Tensor) -> Tensor:
                value = f(z.unsqueeze(-2))  # (..., B), or (..., 1) for a term shared by all targets
                return value[..., index if value.shape[-1] > 1 else 0]

            return picked

        return SubsetTarget({m: pick(f) for m, f in self.members.items()}, pick(self._log_prior), self.prior_power)

    def init_from_members(self, num_chains: int, seed: int | None = None) -> Tensor:
        """Initial states ``(num_chains, B, D)``: for each chain and target, a draw of a member q_m, m uniform in S.

        Needs a target built from distributions (``from_posteriors``/``from_model``).
        """
        if self.posteriors is None:
            raise ValueError("init_from_members needs a target built with from_posteriors or from_model")
        with seeded(seed):
            draws = torch.stack([d.sample((num_chains,)) for d in self.posteriors.values()])  # (M, C, B, D)
            choice = torch.randint(len(draws), draws.shape[1:-1], device=draws.device)
        return torch.gather(draws, 0, choice[None, ..., None].expand(1, *draws.shape[1:]))[0]

    def closed_form(self) -> dist.Independent:
        r"""π_S as a distribution when every member and the prior are diagonal Normals.

        Precisions add: Λ = Σ_{m∈S} Λ_m − c Λ_0, mean μ = Λ^{-1}(Σ_{m∈S} Λ_m μ_m − c Λ_0 μ_0). Raises a
        ValueError when some Λ is not positive (the target is then improper).
        """
        if self.posteriors is None or not isinstance(self.prior, Distribution):
            raise ValueError("closed_form needs a target built from distributions")
        experts = [_diagonal_normal(name, d) for name, d in self.posteriors.items()]
        loc0, scale0 = _diagonal_normal("prior", self.prior)
        c = self.prior_exponent
        precision = sum(scale.pow(-2) for _, scale in experts) - c * scale0.pow(-2)
        if bool((precision <= 0).any()):
            raise ValueError("the subset target is improper: its precision Σ Λ_m − c Λ_0 is not positive")
        weighted = sum(loc * scale.pow(-2) for loc, scale in experts) - c * loc0 * scale0.pow(-2)
        return dist.Normal(weighted / precision, precision.rsqrt()).to_event(1)


def _is_diagonal_normal(d: Distribution) -> bool:
    return isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1


def _diagonal_normal(name: str, d: Distribution) -> tuple[Tensor, Tensor]:
    if _is_diagonal_normal(d):
        return d.base_dist.loc, d.base_dist.scale
    raise TypeError(f"closed_form needs diagonal Normal distributions; {name} is {type(d).__name__}")


def cached_log_density(d: Distribution) -> LogDensity:
    r"""``d.log_prob``, or for a diagonal Normal a closure over its precomputed 1/σ and log-normaliser,
    log N(z; μ, diag σ²) = −½‖(z − μ)/σ‖² − Σ log σ − (D/2) log 2π (about a third cheaper per gradient)."""
    if not _is_diagonal_normal(d):
        return d.log_prob
    loc, inv_scale = d.base_dist.loc, d.base_dist.scale.reciprocal()
    const = inv_scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return lambda z: const - 0.5 * ((z - loc) * inv_scale).square().sum(-1)
