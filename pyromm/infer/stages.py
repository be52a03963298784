"""Training stages: blocks of epochs, each with its own objective (an ELBO on a pair of programs) and parameters.

* TELBO (Vedantam et al. 2018): the joint ELBO on the joint encoder and the decoders, then the unimodal ELBOs on
  the unimodal encoders with the rest frozen.
* JNF and JNF-Shared (Senellart & Allassonnière 2025): (JNF-Shared) the projectors g_m, then the joint ELBO,
  then the unimodal flow posteriors fitted to joint-posterior draws with the rest frozen.

Every stage's objective is ``RateELBO('analytic')`` on a pair of the model's own programs
(``docs/objectives.md``).

Each stage starts with a fresh optimizer; later stages must leave what earlier ones trained unchanged, so the
stages' parameter sets are disjoint (ValueError naming the overlap otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from torch import nn

from pyromm.infer.objective import ELBOObjective
from pyromm.infer.projectors import ProjectorPretraining
from pyromm.infer.rate_elbo import RateELBO
from pyromm.models.jnf import JNF
from pyromm.models.joint_encoder import JointEncoderVAE


@dataclass(frozen=True)
class Stage:
    """A block of ``epochs`` epochs with its own objective and trainable parameters.

    ``objective`` (an :class:`~pyromm.infer.objective.Objective` or a ``pyro.infer.ELBO`` on the model's own
    programs) defaults to the trainer's. ``trainable(model)`` gives the parameters optimised in the stage
    (default: those requiring grad when ``fit`` starts); every other parameter is frozen
    (``requires_grad=False``) during the stage. With ``reset_optimizer`` the stage starts with a fresh
    optimizer; otherwise optimizer state carries over for the parameters trained in both stages.
    """

    name: str
    epochs: int
    objective: object | None = None
    trainable: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None
    reset_optimizer: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"stage {self.name!r}: epochs must be an integer >= 1, got {self.epochs!r}")


def joint_stage_parameters(model) -> Iterator[nn.Parameter]:
    """The parameters of the joint ELBO stage: the joint encoder's and the decoders'."""
    yield from model.joint_encoder.parameters()
    yield from model.decoders.parameters()


def unimodal_stage_parameters(model) -> Iterator[nn.Parameter]:
    """The parameters TELBO's second stage trains: the unimodal encoders' only."""
    yield from model.encoders.parameters()


def projector_parameters(model) -> Iterator[nn.Parameter]:
    """The parameters of the projectors g_m (JNF-Shared's first stage)."""
    for projector in model.projectors.values():
        yield from projector.parameters()


def flow_stage_parameters(model) -> Iterator[nn.Parameter]:
    """The parameters of JNF's flow stage: the unimodal encoders (without their projectors) and the flows."""
    frozen = {id(p) for p in projector_parameters(model)}
    yield from (p for p in model.encoders.parameters() if id(p) not in frozen)
    yield from model.flows.parameters()


def check_disjoint(model_name: str, groups: dict[str, Iterable[nn.Parameter]]) -> None:
    """ValueError naming two groups of parameters that share one."""
    owner: dict[int, str] = {}
    for group, params in groups.items():
        for p in params:
            if owner.setdefault(id(p), group) != group:
                raise ValueError(f"{model_name}: the {group} share a parameter with the {owner[id(p)]}")


def check_joint_elbo(model, method: str) -> None:
    """TypeError unless ``model`` is of the family ``method`` trains; ValueError when its joint programs carry
    JMVAE's unimodal KL terms (α > 0), which the joint stage must not have."""
    family = JNF if method == "JNF" else JointEncoderVAE
    if not isinstance(model, family):
        raise TypeError(f"{method} trains a {family.__name__}, got {type(model).__name__}")
    if model.alpha != 0:
        raise ValueError(
            f"{method}'s joint stage is the ELBO without unimodal KL terms, but the model has alpha={model.alpha}; "
            "build it with alpha=0"
        )


def telbo_stages(model: JointEncoderVAE, epochs_joint: int, epochs_unimodal: int) -> list[Stage]:
    """TELBO's two stages: ``RateELBO('analytic')`` on the joint programs (``model.model``/``model.guide``), then on
    the unimodal programs (``model.unimodal_model``/``model.unimodal_guide``) with the rest frozen."""
    check_joint_elbo(model, "TELBO")
    check_disjoint(
        "TELBO",
        {"joint encoder and decoders": joint_stage_parameters(model), "unimodal encoders": unimodal_stage_parameters(model)},
    )
    return [
        Stage("telbo-joint", epochs_joint, ELBOObjective(RateELBO("analytic")), joint_stage_parameters),
        Stage(
            "telbo-unimodal",
            epochs_unimodal,
            ELBOObjective(RateELBO("analytic"), model.unimodal_model, model.unimodal_guide),
            unimodal_stage_parameters,
        ),
    ]


def jnf_stages(
    model: JNF,
    epochs_joint: int,
    epochs_flows: int,
    projector_objective: str | None = None,
    epochs_projectors: int = 0,
    temperature: float = 0.1,
) -> list[Stage]:
    """JNF's stages (joint ELBO, then the flow posteriors by ``model.flow_fit_model``/``flow_fit_guide``); with
    ``projector_objective`` ('dcca' or 'infonce') JNF-Shared's, preceded by ``epochs_projectors`` epochs of
    projector pretraining."""
    check_joint_elbo(model, "JNF")
    if (projector_objective is None) != (epochs_projectors == 0):
        raise ValueError(
            f"give a projector objective together with epochs_projectors >= 1, got {projector_objective!r} "
            f"and {epochs_projectors}"
        )
    check_disjoint(
        "JNF",
        {
            "projectors": projector_parameters(model),
            "joint encoder and decoders": joint_stage_parameters(model),
            "unimodal encoders and flows": flow_stage_parameters(model),
        },
    )
    pretraining = None if projector_objective is None else ProjectorPretraining(model, projector_objective, temperature)
    stages = [
        Stage("jnf-joint", epochs_joint, ELBOObjective(RateELBO("analytic")), joint_stage_parameters),
        Stage(
            "jnf-flows",
            epochs_flows,
            ELBOObjective(RateELBO("analytic"), model.flow_fit_model, model.flow_fit_guide),
            flow_stage_parameters,
        ),
    ]
    if pretraining is not None:
        objective = ELBOObjective(RateELBO("analytic"), pretraining.model, pretraining.guide)
        stages.insert(0, Stage("jnf-projectors", epochs_projectors, objective, projector_parameters))
    return stages

