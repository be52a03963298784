"""The ``pyro.param`` tensors a model/guide pair creates, found by running the pair once."""
from __future__ import annotations

from typing import Mapping

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn
from torch.distributions import constraints, transform_to

from pyromm.data.batch import MultimodalBatch
from pyromm.handlers import SharedComputations


class ConstraintCheck(Messenger):
    """Refuses a ``pyro.param`` whose constraint no bijection from the reals can keep, naming the param."""

    def _pyro_param(self, msg) -> None:
        constraint = msg["kwargs"].get("constraint", constraints.real)
        try:
            transform_to(constraint)
        except NotImplementedError:
            raise ValueError(
                f"pyro.param {msg['name']!r} has the constraint {constraint}, which no transform from the reals can "
                "keep, so a gradient optimiser cannot train it; give it a continuous constraint (e.g. "
                "constraints.positive or constraints.interval) or make it a fixed tensor"
            ) from None


def program_params(objective, model: nn.Module, batch: MultimodalBatch, hyper: Mapping[str, float]) -> list[Tensor]:
    """The unconstrained tensors of the ``pyro.param``s (and of ``pyro.module``s other than ``model``) that the
    objective's programs touch, in order of appearance; [] for an objective without programs.

    The programs run once without gradients; the random number streams are left untouched."""
    programs = getattr(objective, "programs", None)
    if programs is None:
        return []
    model_fn, guide_fn = programs(model)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), SharedComputations(), ConstraintCheck():
        guide_trace = poutine.trace(guide_fn).get_trace(batch, hyper)
        model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(batch, hyper)
    own = {id(p) for p in model.parameters()}
    from_store = dict(pyro.get_param_store().named_parameters())
    found: dict[int, Tensor] = {}
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if site["type"] != "param" or name not in from_store:
                continue
            tensor = from_store[name]
            if id(tensor) not in own and tensor.requires_grad:
                found.setdefault(id(tensor), tensor)
    return list(found.values())


def user_param_state(tensors: list[Tensor]) -> dict[str, Tensor]:
    """name → unconstrained value of each tensor (as named in Pyro's param store), for a checkpoint."""
    store = pyro.get_param_store()
    return {store.param_name(t): t.detach().clone() for t in tensors}


def load_user_params(tensors: list[Tensor], state: Mapping[str, Tensor]) -> None:
    """Copy checkpointed unconstrained values into the tensors of the same names."""
    store = pyro.get_param_store()
    for t in tensors:
        name = store.param_name(t)
        if name not in state:
            raise KeyError(f"the checkpoint has no value for pyro.param {name!r}; it was written by another program")
        with torch.no_grad():
            t.copy_(state[name])
