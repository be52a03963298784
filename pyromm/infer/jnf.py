r"""Training of JNF and JNF-Shared (ALGORITHMS.md §3.2-3.5) as trainer stages:

0. (JNF-Shared) the projectors g_m, with a projector objective (``pyromm.infer.projectors``);
1. the joint β-ELBO on the joint encoder and the decoders (``JointELBOStage``);
2. the unimodal flow posteriors, everything else frozen, by ``FlowPosteriorFit``.

Each stage starts with a fresh optimizer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping

import torch
from torch import nn

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.jmvae import JointELBOStage, joint_stage_parameters
from pyromm.infer.objective import Objective, ObjectiveOutput

if TYPE_CHECKING:
    from pyromm.models.jnf import JNF
    from pyromm.train.trainer import Stage


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


def projector_parameters(model: JNF) -> Iterator[nn.Parameter]:
    """The parameters of the projectors g_m (JNF-Shared's stage 0)."""
    for projector in model.projectors.values():
        yield from projector.parameters()


def flow_stage_parameters(model: JNF) -> Iterator[nn.Parameter]:
    """The parameters of stage 2: the unimodal encoders (without their projectors) and the flows."""
    frozen = {id(p) for p in projector_parameters(model)}
    yield from (p for p in model.encoders.parameters() if id(p) not in frozen)
    yield from model.flows.parameters()


def jnf_stages(
    model: JNF,
    epochs_joint: int,
    epochs_flows: int,
    projector_objective: Objective | None = None,
    epochs_projectors: int = 0,
) -> list[Stage]:
    """JNF's stages (joint ELBO, then flow posteriors); with ``projector_objective`` JNF-Shared's, preceded by
    ``epochs_projectors`` epochs of projector pretraining.

    Later stages must leave what earlier ones trained unchanged, so the stages' parameter sets must be
    disjoint (ValueError naming the overlap otherwise).
    """
    from pyromm.models.jnf import JNF  # pyromm.models.jnf imports pyromm.infer on use: import here too
    from pyromm.train.trainer import Stage  # pyromm.train imports pyromm.infer: import on use, not at load

    if not isinstance(model, JNF):
        raise TypeError(f"jnf_stages trains a JNF model, got {type(model).__name__}")
    if (projector_objective is None) != (epochs_projectors == 0):
        raise ValueError(
            f"give a projector objective together with epochs_projectors >= 1, got {projector_objective!r} "
            f"and {epochs_projectors}"
        )
    if projector_objective is not None:
        missing = [m for m in model.modality_names if m not in model.projectors]
        if missing:
            raise ValueError(f"JNF-Shared needs a projector for every modality; modality {missing[0]!r} has none")
    groups = {
        "projectors": projector_parameters(model),
        "joint encoder and decoders": joint_stage_parameters(model),
        "unimodal encoders and flows": flow_stage_parameters(model),
    }
    owner: dict[int, str] = {}
    for group, params in groups.items():
        for p in params:
            if owner.setdefault(id(p), group) != group:
                raise ValueError(f"JNF: the {group} share a parameter with the {owner[id(p)]}")
    stages = [
        Stage("jnf-joint", epochs_joint, JointELBOStage("JNF"), joint_stage_parameters),
        Stage("jnf-flows", epochs_flows, FlowPosteriorFit(), flow_stage_parameters),
    ]
    if projector_objective is not None:
        stages.insert(0, Stage("jnf-projectors", epochs_projectors, projector_objective, projector_parameters))
    return stages
