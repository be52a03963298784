"""The general path: any Pyro model and guide, trained by a Pyro ELBO under the objective contract."""
from __future__ import annotations

from typing import Callable, Mapping

import pyro.infer

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.objective import ObjectiveOutput


class PyroELBO:
    r"""loss = elbo.differentiable_loss(model_fn, guide_fn, batch, hyper) / B.

    ``model_fn``/``guide_fn`` default to the model's own ``model``/``guide``; a user-written Pyro model
    taking ``(batch, hyper)`` trains with the same trainer. Encoders run once per step: the guide's
    encodings are reused by the model through ``model.cached_encoding()`` when the model offers it.
    """

    def __init__(
        self,
        elbo: pyro.infer.ELBO | None = None,
        model_fn: Callable | None = None,
        guide_fn: Callable | None = None,
    ) -> None:
        self.elbo = elbo if elbo is not None else pyro.infer.Trace_ELBO()
        self.model_fn, self.guide_fn = model_fn, guide_fn

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        model_fn = self.model_fn or model.model
        guide_fn = self.guide_fn or model.guide
        caching = getattr(model, "cached_encoding", None)
        if caching is None:
            loss = self.elbo.differentiable_loss(model_fn, guide_fn, batch, hyper)
        else:
            with caching():
                loss = self.elbo.differentiable_loss(model_fn, guide_fn, batch, hyper)
        loss = loss / batch.batch_size
        return ObjectiveOutput(loss, {"elbo": loss.detach()})
