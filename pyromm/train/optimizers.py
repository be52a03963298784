"""The optimizer of one training stage: a ``torch.optim`` optimizer or a ``pyro.optim`` optimizer or scheduler."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Protocol, Sequence

import pyro
import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch import nn
from torch.optim import Optimizer


class StageOptimizer(Protocol):
    """What the trainer needs of an optimizer: a step over the stage's parameters, gradients reset, state."""

    def step(self) -> None: ...

    def zero_grad(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def end_epoch(self) -> None: ...


class TorchStageOptimizer:
    """A ``torch.optim`` optimizer over the stage's parameters."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def end_epoch(self) -> None:
        """Nothing: torch schedulers are the caller's (use a ``pyro.optim`` scheduler to step one per epoch)."""

    def carry_state(self, previous: "TorchStageOptimizer", params: Sequence[nn.Parameter]) -> None:
        """Take over ``previous``'s state for the parameters both optimise."""
        for param in params:
            if param in previous.optimizer.state:
                self.optimizer.state[param] = previous.optimizer.state[param]


class PyroStageOptimizer:
    """A ``pyro.optim`` optimizer (one torch optimizer per parameter, as Pyro's SVI runs it) or a ``pyro.optim``
    learning-rate scheduler, stepped once per epoch. State is keyed by Pyro param-store names, so every parameter
    is named there (the model's under ``model$$$<name>``)."""

    def __init__(self, template: PyroOptim, model: nn.Module, params: Sequence[torch.Tensor]) -> None:
        self.optim = copy.deepcopy(template)
        self.params = list(params)
        store = pyro.get_param_store()
        unnamed = [p for p in self.params if store.param_name(p) is None]
        if unnamed:
            pyro.module("model", model)
        missing = [p for p in self.params if store.param_name(p) is None]
        if missing:
            raise ValueError(
                f"{len(missing)} trainable tensors are neither model parameters nor pyro.params; a pyro.optim "
                "optimizer needs each one named in Pyro's param store"
            )

    def step(self) -> None:
        self.optim([p for p in self.params if p.grad is not None])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return self.optim.get_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optim.set_state(dict(state))

    def end_epoch(self) -> None:
        if isinstance(self.optim, PyroLRScheduler):
            self.optim.step()


def optimizer_class(optimizer: str | type[Optimizer]) -> type[Optimizer]:
    """The torch optimizer class named by ``optimizer`` (case-insensitive), or the class itself."""
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer
    known = {
        name.lower(): cls
        for name, cls in vars(torch.optim).items()
        if isinstance(cls, type) and issubclass(cls, Optimizer) and cls is not Optimizer
    }
    if not isinstance(optimizer, str) or optimizer.lower() not in known:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; give a torch.optim class, a pyro.optim optimizer or one of "
            f"{sorted(known)}"
        )
    return known[optimizer.lower()]
