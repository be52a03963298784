"""A training method: its own options and the builders of its model, ELBO, schedules and stages.

A method is one file that subclasses :class:`Method` and registers an instance with :func:`register_method`; from
then on ``RunConfig(model=<name>)``, ``pyromm train --set model=<name>`` and config files select it, its options are
config keys, and ``pyromm methods`` lists them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import pyro.infer
from torch import nn

from pyromm.infer.stages import Stage
from pyromm.options import NoOptions, Registry
from pyromm.train.schedules import Linear

if TYPE_CHECKING:
    from pyromm.config import RunConfig

EventShapes = Mapping[str, tuple[int, ...]]


class Method(ABC):
    """A multimodal VAE method as a run builds it.

    ``name`` is the config's ``model``; ``Options`` is a dataclass of the method's own options (fields declared with
    :func:`pyromm.options.option`), read as ``cfg.<option>``. Subclasses give :meth:`model` and :meth:`elbo`;
    :meth:`schedules` (β, with its warm-up), :meth:`stages` (one stage) and :meth:`check` (nothing) have defaults.
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    @abstractmethod
    def model(self, cfg: RunConfig, event_shapes: EventShapes) -> nn.Module:
        """The model (``pyromm.contracts.InferenceModel``) on data of these modalities."""

    @abstractmethod
    def elbo(self, cfg: RunConfig) -> pyro.infer.ELBO:
        """The ``pyro.infer.ELBO`` the model trains with (its first stage's, for staged methods)."""

    def schedules(self, cfg: RunConfig, steps_per_epoch: int) -> dict[str, Any]:
        """hyper['beta'] = β, or with ``kl_warmup_epochs`` a linear ramp from 0 over that many epochs; with the
        ``beta_squared`` setting (the MMVM code's independent VAEs) β²."""
        beta = cfg.beta**2 if cfg.setting("beta_squared") else cfg.beta
        if cfg.kl_warmup_epochs:
            return {"beta": Linear(0.0, beta, cfg.kl_warmup_epochs * steps_per_epoch)}
        return {"beta": beta}

    def stages(self, cfg: RunConfig, model: nn.Module) -> list[Stage] | None:
        """The training stages, or None for one stage of :meth:`elbo` over all epochs."""
        return None

    def check(self, cfg: RunConfig) -> None:
        """Raise ``ConfigError`` for option values that cannot go together (called when a RunConfig is made)."""


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Make ``method`` selectable as ``model = method.name``."""
    return METHODS.register(method)
