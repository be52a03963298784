"""Objectives of the joint-encoder models: JMVAE (Suzuki et al. 2016) and the two stages of TELBO
(Vedantam et al. 2018), for a :class:`~pyromm.models.joint_encoder.JointEncoderVAE` on complete batches.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator, Mapping

from torch import nn

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.divergences import analytic_kl
from pyromm.infer.objective import ObjectiveOutput
from pyromm.infer.shared_elbo import reconstruction
from pyromm.models.joint_encoder import JointEncoderVAE

if TYPE_CHECKING:
    from pyromm.train.trainer import Stage


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


def joint_stage_parameters(model: JointEncoderVAE) -> Iterator[nn.Parameter]:
    """The parameters TELBO stage 1 trains: the joint encoder's and the decoders'."""
    yield from model.joint_encoder.parameters()
    yield from model.decoders.parameters()


def unimodal_stage_parameters(model: JointEncoderVAE) -> Iterator[nn.Parameter]:
    """The parameters TELBO stage 2 trains: the unimodal encoders' only."""
    yield from model.encoders.parameters()


def telbo_stages(model: JointEncoderVAE, epochs_joint: int, epochs_unimodal: int) -> list[Stage]:
    """TELBO's two training stages: the joint ELBO, then the unimodal ELBOs with the rest frozen.

    Stage 2 leaves the joint encoder and the decoders unchanged, so the unimodal encoders may share no
    parameter with them (ValueError otherwise).
    """
    from pyromm.train.trainer import Stage  # pyromm.train imports pyromm.infer: import on use, not at load

    if not isinstance(model, JointEncoderVAE):
        raise TypeError(f"TELBO trains a JointEncoderVAE, got {type(model).__name__}")
    frozen = {id(p) for p in joint_stage_parameters(model)}
    if any(id(p) in frozen for p in unimodal_stage_parameters(model)):
        raise ValueError("TELBO: the unimodal encoders share parameters with the joint encoder or the decoders")
    return [
        Stage("telbo-joint", epochs_joint, JointELBOStage(), joint_stage_parameters),
        Stage("telbo-unimodal", epochs_unimodal, UnimodalELBOStage(), unimodal_stage_parameters),
    ]
