"""Test oracles: pyromm's objectives as they were hand-written beside the models, before every objective became a
Pyro ELBO over the traces of the models' own programs (``pyromm.infer``). Each reads the models' inference methods
(``encode``, ``joint``, ``encode_parts``, ...) directly; the tests check the trace-based ELBOs against them in loss
and gradients under the same random draws.
"""
from __future__ import annotations

import itertools
import math
from itertools import combinations
from typing import Mapping, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.handlers import SharedComputations
from pyromm.infer.iwae import detach_parameters, importance_weights, iwae_bound
from pyromm.infer.objective import ObjectiveOutput
from pyromm.infer.projectors import cca_loss, info_nce_loss, projections
from pyromm.models.mvae import subset_presence
from pyromm.infer.rates import analytic_kl, check_rate_mode, rate as _rate
from pyromm.models import JNF, MMVAE, JointEncoderVAE, MMVAEPlus
from pyromm.models.mmvae import observed_matrix
from pyromm.models.mmvae_plus import unit_laplace


def rate(q, p, z, mode):
    """R(q, p) by ``mode`` at the draw ``z`` (the hand-written objectives' argument order)."""
    return _rate(q, p, mode, z)


def dreg_surrogate(lw: Tensor, z: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σ_k w̃_k lw_k over dim 0, registering a hook that multiplies the gradient reaching ``z`` by w̃.

    ``z`` of shape ``(K, *batch, D)`` must be the tensor ``lw`` was computed from, with log q evaluated at
    detached posterior parameters; every gradient reaching ``z`` is rescaled, so use it in this term only.
    """
    weights = importance_weights(lw, mask)
    if z.requires_grad:
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    if mask is not None:
        lw = lw.masked_fill(~mask.expand_as(lw), 0.0)
    return (weights * lw).sum(0)


MMVAE_ESTIMATORS = ("dreg", "iwae")
BOUNDS = ("looser", "tight")
ESTIMATORS = ("elbo", "dreg")
DETACH_MODES = ("proper", "reference")


def check_num_samples(K: int) -> int:
    if int(K) != K or K < 1:
        raise ValueError(f"the number of importance samples K must be an integer >= 1, got K={K}")
    return int(K)


def reconstruction(model, batch: MultimodalBatch, z: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """−w_m log p(x_m | z) per sample for each modality in ``names``, zero where x_m is missing."""
    out = {}
    for name in names:
        nll = -model.decode(name, z).log_prob(batch.data[name]) * model.modalities[name].weight
        observed = batch.observed(name)
        out[name] = nll if observed is None else nll * observed
    return out


class SharedELBO:
    r"""loss = 1/B Σ_b [ Σ_{m∈S} o_bm (−w_m log p(x_m | z)) + β · c · R(q(z | X_S), p(z)) ],  z ~ q(z | X_S).

    ``rate``: 'analytic' KL (Gaussian aggregates: AVG, PoE), 'jensen' Σ_k π_k KL(q_k ‖ p) (mixture
    aggregates: MoPoE's subset-averaged KL), 'selected' KL of the component each sample drew (the MMVM
    reference's MoE/MoPoE), or 'mc'. ``rate_scale`` c is 1, or 'modalities' for c = M as the MMVM
    reference's joint baselines (it sums the same KL once per modality).
    """

    def __init__(self, rate: str = "analytic", rate_scale: float | str = 1.0) -> None:
        self.rate = check_rate_mode(rate)
        if rate_scale != "modalities" and not (isinstance(rate_scale, (int, float)) and rate_scale >= 0):
            raise ValueError(f"rate_scale must be a number >= 0 or 'modalities', got {rate_scale!r}")
        self.rate_scale = rate_scale

    def terms(self, model, batch: MultimodalBatch, subset: Sequence[str] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Per-sample reconstruction terms of the subset's modalities and the per-sample rate.

        A sample that observes none of the subset's modalities contributes zero (its aggregate is computed
        from placeholders over the whole subset, then masked out), so subset ELBOs work on incomplete data.
        """
        names = list(batch.data) if subset is None else list(subset)
        present, mask = subset_presence(batch, names)
        q = model.joint(batch, names) if mask is None else model.joint(batch, names, mask=mask)
        z = q.rsample()
        scale = len(model.modality_names) if self.rate_scale == "modalities" else self.rate_scale
        r = scale * rate(q, model.prior(batch), z, self.rate)
        return reconstruction(model, batch, z, names), r if present is None else r * present

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        rec, r = self.terms(model, batch)
        return _output(rec, r, hyper.get("beta", 1.0))


class SubsampledELBO:
    r"""MVAE's objective: ELBO(X) + Σ_m ELBO(x_m) + Σ_{j<k} ELBO(X_{S_j}), S_j random subsets of size 2..M−1.

    Each subset's ELBO reconstructs only that subset's modalities; the encoders run once per step.
    """

    def __init__(self, base: SharedELBO | None = None, num_random_subsets: int = 0) -> None:
        if num_random_subsets < 0:
            raise ValueError(f"num_random_subsets must be >= 0, got {num_random_subsets}")
        self.base = base if base is not None else SharedELBO("analytic")
        self.num_random_subsets = num_random_subsets

    def subsets(self, names: list[str]) -> list[list[str]]:
        """The full set, every singleton, and k subsets drawn uniformly among those of size 2..M−1."""
        chosen = [list(names)] + [[n] for n in names] if len(names) > 1 else [list(names)]
        middle = [list(c) for size in range(2, len(names)) for c in itertools.combinations(names, size)]
        if middle and self.num_random_subsets:
            picks = dist.Categorical(logits=torch.zeros(len(middle))).expand([self.num_random_subsets]).sample().tolist()
            chosen += [middle[i] for i in picks]
        return chosen

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        beta = hyper.get("beta", 1.0)
        total, terms = 0.0, {}
        with SharedComputations():
            for subset in self.subsets(list(batch.data)):
                rec, r = self.base.terms(model, batch, subset)
                out = _output(rec, r, beta)
                total = total + out.loss
                terms[f"elbo/{'+'.join(subset)}"] = out.loss.detach()
        return ObjectiveOutput(total, terms)


class MVTCAEObjective:
    r"""MVTCAE (Hwang et al. 2021), as MultiVae computes it, with q = PoE of the unimodal posteriors:

    loss = 1/B Σ_b [ (M − α)/M Σ_m w_m (−log p(x_m | z)) + β ( α/M Σ_m KL(q(z|X) ‖ q_m) + (1 − α) KL(q(z|X) ‖ N(0, I)) ) ].
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        m, alpha = len(model.modality_names), self.alpha
        with SharedComputations():
            posteriors = model.encode(batch)
            q = model.joint(batch)
        z = q.rsample()
        rec = {n: (m - alpha) / m * v for n, v in reconstruction(model, batch, z, list(batch.data)).items()}
        r = (1.0 - alpha) * analytic_kl(q, model.prior(batch))
        for name, q_m in posteriors.items():
            kl = analytic_kl(q, q_m)
            observed = batch.observed(name)
            r = r + alpha / m * (kl if observed is None else kl * observed)
        return _output(rec, r, hyper.get("beta", 1.0))


def _output(rec: dict[str, Tensor], r: Tensor, beta: float) -> ObjectiveOutput:
    terms = {f"rec/{n}": v.mean().detach() for n, v in rec.items()}
    terms["rate"] = r.mean().detach()
    return ObjectiveOutput(sum(v.mean() for v in rec.values()) + beta * r.mean(), terms)


class MultimodalELBO:
    r"""loss = 1/B Σ_b Σ_m o_bm [ −w_m log p(x_m | z_m) + β R(q_m, h_m) ],  z_m ~ q_m(z_m | x_m).

    ``rate`` picks R: 'analytic' (closed-form KL), 'jensen' (Σ_k w_k KL(q_m ‖ p_k) for a mixture prior,
    the MMVM reference code's bound, exact KL for a single Gaussian prior) or 'mc' (log q_m(z_m) −
    log h_m(z_m), the paper's KL to the mixture estimated by sampling). o_bm = 1 where modality m of
    sample b is observed. β is ``hyper['beta']`` (default 1).
    """

    def __init__(self, rate: str = "analytic") -> None:
        self.rate = check_rate_mode(rate)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        beta = hyper.get("beta", 1.0)
        posteriors = model.encode(batch)
        priors = model.conditional_priors(posteriors, batch, hyper)
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, q in posteriors.items():
            z = q.rsample()
            rec = -model.decode(name, z).log_prob(batch.data[name]) * model.modalities[name].weight
            r = rate(q, priors[name], z, self.rate)
            observed = batch.observed(name)
            if observed is not None:
                rec, r = rec * observed, r * observed
            rec, r = rec.mean(), r.mean()
            terms[f"rec/{name}"], terms[f"rate/{name}"] = rec.detach(), r.detach()
            total = total + rec + beta * r
        return ObjectiveOutput(total, terms)


class IWAE:
    r"""loss = −1/B Σ_b log (1/K) Σ_k exp(lw_bk) for a model with one joint posterior (``SharedLatentVAE``).

    z_k ~ q(z | X) = ``model.joint(batch)`` i.i.d. (rsample), and
    lw_k = Σ_m o_bm w_m log p(x_m | z_k) + β (log p(z_k) − log q(z_k | X)), o_bm = 1 where x_m is observed,
    β = ``hyper['beta']`` (default 1; β = 1 gives the IWAE bound). K = 1 is the single-sample ELBO.
    """

    detach_posterior = False

    def __init__(self, K: int = 10) -> None:
        self.K = check_num_samples(K)

    def log_weights(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> tuple[Tensor, Tensor]:
        """lw ``(K, B)`` and the samples z ``(K, B, D)``; log q at detached parameters for DReG."""
        q = model.joint(batch)
        if getattr(q, "stratified", False):
            raise ValueError(
                "importance weighting needs i.i.d. samples of q(z | X), but a stratified mixture draws every "
                "sample of a batch position from one component; build the aggregate with stratified=False"
            )
        z = q.rsample((self.K,))
        log_q = (detach_parameters(q) if self.detach_posterior else q).log_prob(z)
        log_px = -sum(reconstruction(model, batch, z, list(batch.data)).values())
        return log_px + hyper.get("beta", 1.0) * (model.prior(batch).log_prob(z) - log_q), z

    def reduce(self, lw: Tensor, z: Tensor) -> Tensor:
        """The per-sample objective ``(B,)`` from the log-weights."""
        return iwae_bound(lw)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        lw, z = self.log_weights(model, batch, hyper)
        loss = -self.reduce(lw, z).mean()
        return ObjectiveOutput(loss, {"iwae": iwae_bound(lw.detach()).mean()})


class DReG(IWAE):
    r"""The doubly reparameterised IWAE gradient: loss = −1/B Σ_b Σ_k w̃_bk lw_bk with the w̃ hook on z.

    lw as :class:`IWAE` with q's parameters detached in log q; the gradient estimates that of the IWAE
    bound without its score-function term. ``terms['iwae']`` logs the IWAE bound of the same samples.
    """

    detach_posterior = True

    def reduce(self, lw: Tensor, z: Tensor) -> Tensor:
        return dreg_surrogate(lw, z)


class JMVAEObjective:
    r"""JMVAE-KL as MultiVae computes it, z ~ q(z | X) of the joint encoder (one sample):

    loss = 1/B Σ_b [ Σ_m w_m (−log p(x_m|z)) + a · (β KL(q(z|X) ‖ N(0, I)) + α Σ_m KL(q(z|X) ‖ q_m(z|x_m))) ].

    β = ``hyper["beta"]``; the annealing factor a = ``hyper.get("kl_warmup", 1.0)`` comes from the trainer's
    schedules: ``EpochWarmup(1.0, warmup)`` gives JMVAE's a(e) = min(1, e / warmup). Terms: ``rec/<m>``,
    ``kl_prior``, ``kl_unimodal/<m>`` and ``rate`` (the bracket), so loss = Σ_m rec/m + a · rate.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, model: JointEncoderVAE, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model.require_complete(batch, "JMVAE")
        names = model.modality_names
        q = model.joint_posterior(batch)
        posteriors = model.encode(batch)
        rec = reconstruction(model, batch, q.rsample(), names)
        kl_prior = analytic_kl(q, model.prior(batch))
        kl_unimodal = {n: analytic_kl(q, posteriors[n]) for n in names}
        rate = hyper.get("beta", 1.0) * kl_prior + self.alpha * sum(kl_unimodal.values())
        loss = sum(v.mean() for v in rec.values()) + hyper.get("kl_warmup", 1.0) * rate.mean()
        terms = {f"rec/{n}": v.mean().detach() for n, v in rec.items()}
        terms["kl_prior"] = kl_prior.mean().detach()
        terms.update({f"kl_unimodal/{n}": v.mean().detach() for n, v in kl_unimodal.items()})
        terms["rate"] = rate.mean().detach()
        return ObjectiveOutput(loss, terms)


class JointELBOStage:
    r"""TELBO stage 1, the joint ELBO on the joint encoder, z ~ q(z | X):

    loss = 1/B Σ_b [ Σ_m w_m (−log p(x_m | z)) + β KL(q(z|X) ‖ N(0, I)) ].

    Also JNF's first stage; ``model_name`` is the one incomplete-batch errors name.
    """

    def __init__(self, model_name: str = "TELBO") -> None:
        self.model_name = model_name

    def __call__(self, model: JointEncoderVAE, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model.require_complete(batch, self.model_name)
        q = model.joint_posterior(batch)
        rec = reconstruction(model, batch, q.rsample(), model.modality_names)
        kl = analytic_kl(q, model.prior(batch))
        terms = {f"rec/{n}": v.mean().detach() for n, v in rec.items()}
        terms["rate"] = kl.mean().detach()
        return ObjectiveOutput(sum(v.mean() for v in rec.values()) + hyper.get("beta", 1.0) * kl.mean(), terms)


class UnimodalELBOStage:
    r"""TELBO stage 2, one ELBO per unimodal encoder, each with its own z_m ~ q_m(z | x_m) = N(μ_m, exp(lv_m)):

    loss = 1/B Σ_b Σ_m [ w_m (−log p(x_m | z_m)) + β KL(q_m(z|x_m) ‖ N(0, I)) ].

    Terms: ``rec/<m>`` and ``rate/<m>``.
    """

    def __call__(self, model: JointEncoderVAE, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model.require_complete(batch, "TELBO")
        beta = hyper.get("beta", 1.0)
        prior = model.prior(batch)
        loss, terms = 0.0, {}
        for name, q_m in model.encode(batch).items():
            rec = reconstruction(model, batch, q_m.rsample(), [name])[name]
            kl = analytic_kl(q_m, prior)
            loss = loss + rec.mean() + beta * kl.mean()
            terms[f"rec/{name}"], terms[f"rate/{name}"] = rec.mean().detach(), kl.mean().detach()
        return ObjectiveOutput(loss, terms)


class FlowPosteriorFit:
    r"""JNF stage 2: fit each q_m(z | x_m) to draws of the frozen joint posterior,

    loss = 1/B Σ_b Σ_m −log q_m(z_b | x_m^b),   z_b ~ q(z | X^b) (one draw per step, no gradient),

    i.e. Σ_m KL(q(z | X) ‖ q_m(z | x_m)) up to the joint entropy, constant once the joint encoder is frozen.
    Terms: ``nll/<m>``. (The reference lets its very first stage-2 step reach the joint encoder; here it never does.)
    """

    def __call__(self, model: JNF, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model.require_complete(batch, "JNF")
        with torch.no_grad():
            z = model.joint_posterior(batch).sample()
        nll = {name: -q.log_prob(z) for name, q in model.encode(batch).items()}
        terms = {f"nll/{name}": v.mean().detach() for name, v in nll.items()}
        return ObjectiveOutput(sum(v.mean() for v in nll.values()), terms)


class MMVAEObjective:
    r"""loss = −1/B Σ_b objective_b, the MMVAE bound of the module docstring.

    ``estimator``: 'dreg' (the reference default) or 'iwae'; ``bound``: 'looser' (per-modality bounds
    averaged, the reference default) or 'tight' (all M·K samples pooled). ``hyper`` is not used (the
    reference ignores β). ``terms['iwae']`` logs the IWAE value of the same bound and samples.
    """

    def __init__(self, K: int = 10, estimator: str = "dreg", bound: str = "looser") -> None:
        self.K = check_num_samples(K)
        if estimator not in MMVAE_ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose from {MMVAE_ESTIMATORS}")
        if bound not in BOUNDS:
            raise ValueError(f"unknown bound {bound!r}; choose from {BOUNDS}")
        self.estimator, self.bound = estimator, bound

    def log_weights(
        self,
        model: MMVAE,
        batch: MultimodalBatch,
        posteriors: Mapping[str, dist.Independent],
        z: Tensor,
        observed: Tensor,
    ) -> Tensor:
        """lw ``(*S, B)`` of samples z ``(*S, B, D)``, S = (K, M) (looser) or (K·M,) with s = k·M + r (tight);
        ``observed`` ``(B, M)`` in the order of ``batch.data``.

        Each decoder takes the K·B samples of one source r per call, as the references do: one call on all
        K·M·B rows allocates activations beyond glibc's 32 MiB mmap threshold, which a CPU step page-faults
        afresh every time (a PolyMNIST step at K = 10, M = 3, B = 128 took 1.25× as long).
        """
        names = list(batch.data)
        if self.estimator == "dreg":
            posteriors = {n: detach_parameters(q) for n, q in posteriors.items()}
        log_q = torch.stack([posteriors[n].log_prob(z) for n in names], dim=-1)
        log_q = log_q.masked_fill(~observed, float("-inf"))
        log_mixture = torch.logsumexp(log_q, -1) - observed.sum(-1).to(log_q.dtype).log()
        by_source = z.reshape(-1, len(names), *z.shape[-2:]).unbind(1)
        log_px = -torch.stack([sum(reconstruction(model, batch, z_r, names).values()) for z_r in by_source], 1)
        return model.prior(batch).log_prob(z) + log_px.reshape(z.shape[:-1]) - log_mixture

    def per_sample(self, model: MMVAE, batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
        """objective_b ``(B,)`` (differentiable) and the IWAE value of the same bound ``(B,)`` (detached)."""
        names = list(batch.data)
        observed = observed_matrix(names, batch.mask, batch.batch_size, batch.device)
        posteriors = model.encode(batch)
        z = torch.stack([posteriors[n].rsample((self.K,)) for n in names], dim=1)  # (K, M, B, D)
        by_modality = observed.T  # (M, B)
        if self.bound == "tight":
            z = z.reshape(-1, *z.shape[2:])  # sample s = k·M + r
            by_modality = by_modality.expand(self.K, *by_modality.shape).reshape(z.shape[:-1])
        lw = self.log_weights(model, batch, posteriors, z, observed)
        dreg = self.estimator == "dreg"
        return self.reduce(lw, z, by_modality, dreg), self.reduce(lw.detach(), z, by_modality, False)

    def reduce(self, lw: Tensor, z: Tensor, kept: Tensor, dreg: bool) -> Tensor:
        """looser: mean over observed r of the per-r estimator over k; tight: the estimator over the kept (r, k)."""
        if self.bound == "tight":
            return dreg_surrogate(lw, z, kept) if dreg else iwae_bound(lw, kept)
        per_modality = dreg_surrogate(lw, z) if dreg else iwae_bound(lw)  # (M, B)
        return torch.where(kept, per_modality, 0.0).sum(0) / kept.sum(0)

    def __call__(self, model: MMVAE, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        objective, bound = self.per_sample(model, batch)
        return ObjectiveOutput(-objective.mean(), {"iwae": bound.mean()})


class MMVAEPlusObjective:
    r"""loss = −1/B Σ_b objective_b with the log-weights lw_{r,k} of the module docstring.

    * ``estimator='elbo'`` (K = 1 only; the official PolyMNIST default):
      objective_b = mean_{r∈O_b} log (1/K) Σ_k exp(lw_{r,k}) = mean_{r∈O_b} lw_{r,1}, log q at the live parameters.
    * ``estimator='dreg'``: objective_b = mean_{r∈O_b} Σ_k w̃_{r,k} lw_{r,k}, w̃ = softmax_k(lw_{r,·}) (no grad),
      with a hook multiplying the gradient reaching u_{r,k} = [w_{r,k}, z_{r,k}] by w̃_{r,k} (not the draws ŵ
      of r_d). ``detach='proper'`` evaluates log q_m(z) and log q_r(w) at detached posterior parameters
      (MultiVae; the DReG estimator: encoders get only the w̃²-weighted path gradient); ``detach='reference'``
      evaluates them at the live parameters, as the official ``_m_dreg`` does (it builds detached posteriors
      but never uses them), so the encoders also get the score term −β Σ_k w̃_{r,k} ∇_φ log q(u_{r,k}).
      The two modes give the same loss value and the same decoder and prior gradients.

    β = ``beta``, or ``hyper['beta']`` (default 1) when ``beta`` is None. ``terms['iwae']`` logs
    mean_r log (1/K) Σ_k exp(lw_{r,k}) of the same samples.
    """

    def __init__(self, K: int = 1, estimator: str = "elbo", beta: float | None = None, detach: str = "proper") -> None:
        self.K = check_num_samples(K)
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
        if estimator == "elbo" and self.K != 1:
            raise ValueError(f"estimator 'elbo' uses one sample per modality (K=1), got K={K}; use 'dreg' for K > 1")
        if detach not in DETACH_MODES:
            raise ValueError(f"unknown detach mode {detach!r}; choose from {DETACH_MODES}")
        if beta is not None and beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.estimator, self.beta, self.detach = estimator, beta, detach

    def log_weights(
        self,
        model: MMVAEPlus,
        batch: MultimodalBatch,
        parts: Mapping[str, tuple[dist.Independent, dist.Independent]],
        u: Tensor,
        cross: Mapping[tuple[str, str], Tensor],
        observed: Tensor,
        beta: float,
    ) -> Tensor:
        """lw ``(K, M, B)`` of the draws u ``(K, M, B, D_w + D_z)`` (source r along dim 1, in the order of
        ``batch.data``), the cross private draws ``cross[r, d]`` ``(K, B, D_w)`` and ``observed`` ``(B, M)``."""
        names = list(batch.data)
        if self.estimator == "dreg" and self.detach == "proper":
            parts = {n: (detach_parameters(q_z), detach_parameters(q_w)) for n, (q_z, q_w) in parts.items()}
        w, z = u[..., : model.private_dim], u[..., model.private_dim :]
        log_q_z = torch.stack([parts[m][0].log_prob(z) for m in names], dim=-1)  # (K, M_r, B, M_m)
        log_q_z = log_q_z.masked_fill(~observed, float("-inf"))
        log_mixture = torch.logsumexp(log_q_z, -1) - observed.sum(-1).to(u.dtype).log()
        log_q_w = torch.stack([parts[r][1].log_prob(w[:, i]) for i, r in enumerate(names)], dim=1)
        log_pu = unit_laplace(u.shape, u).log_prob(u)
        log_px = 0.0
        for d in names:  # one decoder call per (r, d) pair, as MMVAEObjective.log_weights explains
            inputs = [u[:, i] if r == d else torch.cat([cross[r, d], z[:, i]], -1) for i, r in enumerate(names)]
            log_px = log_px - torch.stack([reconstruction(model, batch, v, [d])[d] for v in inputs], dim=1)
        return log_px + beta * (log_pu - log_mixture - log_q_w)

    def per_sample(self, model: MMVAEPlus, batch: MultimodalBatch, hyper: Mapping[str, float]) -> tuple[Tensor, Tensor]:
        """objective_b ``(B,)`` (differentiable) and mean_r log (1/K) Σ_k exp(lw_{r,k}) ``(B,)`` (detached)."""
        names = list(batch.data)
        observed = observed_matrix(names, batch.mask, batch.batch_size, batch.device)
        parts = model.encode_parts(batch)
        draws = [(q_z.rsample((self.K,)), q_w.rsample((self.K,))) for q_z, q_w in parts.values()]
        u = torch.stack([torch.cat([w, z], -1) for z, w in draws], dim=1)  # (K, M, B, D_w + D_z)
        cross = {
            (r, d): model.private_prior(d).rsample((self.K, batch.batch_size)) for r in names for d in names if d != r
        }
        beta = hyper.get("beta", 1.0) if self.beta is None else self.beta
        lw = self.log_weights(model, batch, parts, u, cross, observed, beta)
        per_modality = dreg_surrogate(lw, u) if self.estimator == "dreg" else iwae_bound(lw)  # (M, B)
        return self.mean_over_sources(per_modality, observed), self.mean_over_sources(iwae_bound(lw.detach()), observed)

    @staticmethod
    def mean_over_sources(per_modality: Tensor, observed: Tensor) -> Tensor:
        """mean_{r∈O_b} of a ``(M, B)`` tensor, for ``observed`` ``(B, M)``."""
        kept = observed.T
        return torch.where(kept, per_modality, 0.0).sum(0) / kept.sum(0)

    def __call__(self, model: MMVAEPlus, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        objective, bound = self.per_sample(model, batch, hyper)
        return ObjectiveOutput(-objective.mean(), {"iwae": bound.mean()})


def _pairwise(losses: Mapping[tuple[str, str], Tensor], prefix: str) -> ObjectiveOutput:
    terms = {f"{prefix}/{a}-{b}": v.detach() for (a, b), v in losses.items()}
    return ObjectiveOutput(sum(losses.values()), terms)


class DCCAObjective:
    r"""Deep CCA: loss = Σ_{m<m'} cca_loss(g_m(x_m), g_{m'}(x_{m'})) = −Σ_{pairs} Σ_i ρ_i (terms ``cca/<m>-<m'>``)."""

    def __init__(self, r1: float = 1e-3, r2: float = 1e-3, top_k: int | None = None, eps: float = 1e-9) -> None:
        if r1 < 0 or r2 < 0 or eps <= 0:
            raise ValueError(f"DCCA needs r1, r2 >= 0 and eps > 0, got r1={r1}, r2={r2}, eps={eps}")
        self.r1, self.r2, self.top_k, self.eps = float(r1), float(r2), top_k, float(eps)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        g = projections(model, batch)
        losses = {(a, b): cca_loss(g[a], g[b], self.r1, self.r2, self.top_k, self.eps) for a, b in combinations(g, 2)}
        return _pairwise(losses, "cca")


class InfoNCEObjective:
    r"""Contrastive pretraining: loss = Σ_{m<m'} info_nce_loss(g_m(x_m), g_{m'}(x_{m'}), τ) (terms ``nce/<m>-<m'>``)."""

    def __init__(self, temperature: float = 0.1) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        g = projections(model, batch)
        losses = {(a, b): info_nce_loss(g[a], g[b], self.temperature) for a, b in combinations(g, 2)}
        return _pairwise(losses, "nce")
