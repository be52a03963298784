"""The base of pyromm's ELBOs: a ``pyro.infer.ELBO`` whose loss is a sum of named per-site terms."""
from __future__ import annotations

import pyro.infer
import torch
from torch import Tensor

from pyromm.handlers import SharedComputations
from pyromm.infer.traces import run_pair


class TermsELBO(pyro.infer.ELBO):
    r"""A Pyro ELBO computed from the traces of a model and its guide, as a sum of named terms.

    Subclasses implement :meth:`terms`, returning the differentiable loss (the negative objective summed over
    the ``data`` plate, as Pyro's ELBOs sum) and a dict of detached terms (``rec/<m>``, ``rate/<m>``, ...).
    The guide and the model run inside one :class:`~pyromm.handlers.SharedComputations`, so computations marked
    :func:`~pyromm.handlers.shared` (the encoders) run once. No method syncs the host with the device except
    :meth:`loss`, which returns a float.
    """

    def terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) of one particle: Pyro's hook, the traces :meth:`terms` reads."""
        return run_pair(model, guide, args, kwargs)

    def loss_and_terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        """(differentiable loss, detached terms) of one evaluation."""
        with SharedComputations():
            return self.terms(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        return self.loss_and_terms(model, guide, *args, **kwargs)[0]

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())
