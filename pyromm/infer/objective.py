"""What the trainer calls each step: a Pyro ELBO on a model/guide pair, per sample of the batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, runtime_checkable

import pyro
import pyro.infer
import torch
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.handlers import SharedComputations


@dataclass
class ObjectiveOutput:
    """A scalar ``loss`` to minimise and detached per-term tensors for logging.

    ``loss`` is the batch mean of the per-sample negative objective (an ELBO's loss divided by the batch size).
    ``gradients_done``: the objective has already accumulated the gradients of ``loss`` (ELBOs that only offer
    ``loss_and_grads``); the trainer must not call ``backward``.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    gradients_done: bool = False


@runtime_checkable
class Objective(Protocol):
    """``objective(model, batch, hyper) -> ObjectiveOutput``; ``hyper`` holds schedule values (beta, alpha, ...)."""

    def __call__(self, model: nn.Module, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput: ...


class ELBOObjective:
    r"""loss = elbo.loss(model_fn, guide_fn, batch, hyper) / B, with the ELBO's terms also divided by B.

    ``model_fn``/``guide_fn`` default to the model's own ``model``/``guide`` programs. Any ``pyro.infer.ELBO``
    works: pyromm's ELBOs (per-site terms ``rec/<m>``, ``rate/<m>``), those with ``differentiable_loss``
    (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO``: term ``elbo``), and those that only offer
    ``loss_and_grads`` (``TraceGraph_ELBO``, ``RenyiELBO``), whose gradients are computed here and divided by B.
    JIT-compiled ELBOs get the batch's tensors and the hyper values as tensor arguments, so they compile once.
    """

    def __init__(self, elbo: pyro.infer.ELBO, model_fn: Callable | None = None, guide_fn: Callable | None = None) -> None:
        if not isinstance(elbo, pyro.infer.ELBO):
            raise TypeError(f"ELBOObjective needs a pyro.infer.ELBO, got {type(elbo).__name__}")
        self.elbo, self.model_fn, self.guide_fn = elbo, model_fn, guide_fn
        self.jit = type(elbo).__name__.startswith("Jit")
        self.gradients_done = not hasattr(elbo, "differentiable_loss")

    def programs(self, model: nn.Module) -> tuple[Callable, Callable]:
        """The model and guide programs this objective evaluates on ``model``."""
        return self.model_fn or model.model, self.guide_fn or model.guide

    def __call__(self, model: nn.Module, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model_fn, guide_fn = self.programs(model)
        args: tuple = (batch, hyper)
        kwargs: dict = {}
        if self.jit:
            model_fn, guide_fn, args, kwargs = tensor_arguments(model_fn, guide_fn, batch, hyper)
        n = batch.batch_size
        if hasattr(self.elbo, "loss_and_terms"):  # pyromm's ELBOs open SharedComputations themselves
            loss, terms = self.elbo.loss_and_terms(model_fn, guide_fn, *args, **kwargs)
            return ObjectiveOutput(loss / n, {k: v / n for k, v in terms.items()})
        with SharedComputations():
            if self.gradients_done:
                if torch.is_grad_enabled():
                    value = self.elbo.loss_and_grads(model_fn, guide_fn, *args, **kwargs)
                    scale_gradients(model, 1.0 / n)
                else:
                    value = self.elbo.loss(model_fn, guide_fn, *args, **kwargs)
                loss = torch.tensor(value, device=batch.device)
                terms = {"elbo": loss}
            else:
                loss = self.elbo.differentiable_loss(model_fn, guide_fn, *args, **kwargs)
                terms = {"elbo": loss.detach()}
        return ObjectiveOutput(loss / n, {k: v / n for k, v in terms.items()}, self.gradients_done)

    def __repr__(self) -> str:
        return f"ELBOObjective({type(self.elbo).__name__})"


def scale_gradients(model: nn.Module, factor: float) -> None:
    """Multiply the gradients of the model's parameters and of Pyro's param store by ``factor``, once each."""
    seen: set[int] = set()
    for p in [*model.parameters(), *(value for _, value in pyro.get_param_store().named_parameters())]:
        if id(p) not in seen and p.grad is not None:
            seen.add(id(p))
            p.grad.mul_(factor)


def tensor_arguments(model_fn: Callable, guide_fn: Callable, batch: MultimodalBatch, hyper: Mapping[str, float]):
    """(model, guide, args, kwargs) for a JIT-compiled ELBO: the batch's tensors and the hyper values as tensor
    ``args``, their layout as the hashable ``kwargs`` that selects the compiled graph."""
    names = tuple(batch.data)
    masked = tuple(n for n in names if batch.mask is not None and batch.mask.get(n) is not None)
    keys = tuple(sorted(hyper))
    tensors = [batch.data[n] for n in names] + [batch.mask[n] for n in masked]
    if batch.labels is not None:
        tensors.append(batch.labels)
    tensors += [torch.as_tensor(float(hyper[k]), device=batch.device) for k in keys]
    layout = (names, masked, batch.labels is not None, keys)

    def rebuild(values: tuple[Tensor, ...]) -> tuple[MultimodalBatch, dict[str, Tensor]]:
        data = dict(zip(names, values[: len(names)]))
        rest = values[len(names):]
        mask = dict(zip(masked, rest[: len(masked)])) or None
        rest = rest[len(masked):]
        labels = rest[0] if layout[2] else None
        return MultimodalBatch(data, mask, labels), dict(zip(keys, rest[1:] if layout[2] else rest))

    def model(*values: Tensor, layout: tuple) -> None:
        return model_fn(*rebuild(values))

    def guide(*values: Tensor, layout: tuple) -> None:
        return guide_fn(*rebuild(values))

    return model, guide, tuple(tensors), {"layout": layout}
