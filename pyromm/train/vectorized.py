"""K runs of one architecture (β values, seeds) trained in lockstep as one vectorized program (``torch.func``).

The runs' parameters are stacked on a new leading dimension, θ = [θ_1; …; θ_K], and one step evaluates every
run's objective with ``vmap(functional_call)``::

    L(θ) = Σ_k L_k(θ_k; batch_k, hyper_k),   ∇_{θ_k} L = ∇ L_k(θ_k),

because L_k depends on θ_k only. Adam is elementwise, so ``torch.optim.Adam`` on the stacked tensors takes
each run's own Adam step: the K runs are independent runs computed together. Each run draws its own data order
from its seed; a hyper that differs between runs (β) is a (K,) tensor, the others plain floats.

Sampling noise: ``torch.distributions`` draw noise in place, which ``vmap`` can only share over the runs
(``randomness='same'``), so every run sees the noise stream a separate run started from the same torch seed
would see (common random numbers over the grid); inits and data orders still differ per seed. Buffers are read,
never updated (no batch-norm statistics).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import pyro
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.infer.objective import Objective


class VectorizedRuns:
    """``models`` (one per run, same architecture) trained together with ``objective`` and Adam(``lr``)."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        objective: Objective,
        *,
        lr: float = 1e-3,
        optimizer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not models:
            raise ValueError("no models to train")
        params, self.buffers = stack_module_state(list(models))
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        self.num_runs = len(models)
        self.template = _ObjectiveCall(copy.deepcopy(models[0]), objective)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=lr, **dict(optimizer_kwargs or {}))

    def step(self, batch: MultimodalBatch, hyper: Mapping[str, float | Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimizer step of every run on its batch: ``batch.data[m]`` is (K, B, *event_shape) and
        ``batch.mask[m]`` (K, B); ``hyper`` values are floats (shared) or (K,) tensors (one per run). Returns the
        (K,) losses and (K,) terms."""
        per_run = {k: v for k, v in hyper.items() if isinstance(v, Tensor)}
        shared = {k: float(v) for k, v in hyper.items() if not isinstance(v, Tensor)}
        for name, value in per_run.items():
            if value.shape != (self.num_runs,):
                raise ValueError(f"hyper {name!r} has shape {tuple(value.shape)}, expected ({self.num_runs},)")

        def run(params, buffers, data, mask, hyper_k):
            state = {f"model.{k}": v for k, v in {**params, **buffers}.items()}
            return functional_call(self.template, state, (MultimodalBatch(data, mask), {**shared, **hyper_k}))

        with pyro.validation_enabled(False):
            in_dims = (0, 0, 0, None if batch.mask is None else 0, 0)
            loss, terms = vmap(run, in_dims, randomness="same")(self.params, self.buffers, batch.data, batch.mask, per_run)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def state_dict(self, run: int) -> dict[str, Tensor]:
        """Run ``run``'s parameters and buffers, as its model's ``state_dict``."""
        return {name: t[run].detach().clone() for name, t in {**self.params, **self.buffers}.items()}


class _ObjectiveCall(nn.Module):
    """``objective(model, batch, hyper)`` as a module's forward, so ``functional_call`` can swap the model's state."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: MultimodalBatch, hyper: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.objective(self.model, batch, hyper)
        return out.loss, out.terms


def stacked_batches(
    dataset: MultimodalDataset, generators: Sequence[torch.Generator], batch_size: int
) -> list[MultimodalBatch]:
    """One epoch of batches for K runs: run k shuffles with ``generators[k]`` (as ``dataset.batches(shuffle=True,
    drop_last=True)`` would), and batch i stacks every run's i-th batch: data (K, B, ...), masks (K, B)."""
    orders = [torch.randperm(len(dataset), generator=g).to(dataset.device) for g in generators]
    batches = []
    for start in range(0, len(dataset) - batch_size + 1, batch_size):
        parts = [dataset.batch(order[start : start + batch_size]) for order in orders]
        data = {m: torch.stack([p.data[m] for p in parts]) for m in parts[0].data}
        mask = None if parts[0].mask is None else {m: torch.stack([p.mask[m] for p in parts]) for m in parts[0].mask}
        batches.append(MultimodalBatch(data, mask))
    return batches
