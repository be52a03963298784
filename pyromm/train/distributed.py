"""Data-parallel training with ``torch.distributed``: every rank trains on its shard of each global batch.

W processes (ranks) draw the same permutation (the data-order generator has the same seed on every rank) and
cut each global batch of B samples into W contiguous shards of B / W. Rank r computes the batch-mean loss of
its shard; after ``backward`` the gradients, the loss and the terms are summed over ranks with one
``all_reduce`` and divided by W::

    ḡ = (1/W) Σ_r ∇ (W/B) Σ_{i ∈ shard r} ℓ_i = ∇ (1/B) Σ_i ℓ_i,

the gradient of the global-batch mean, exactly because the shards are equal (B divisible by W, incomplete
last batches dropped). All ranks start from rank 0's parameters and apply the same optimizer step to the
same averaged gradient, so the replicas stay identical.

Not ``DistributedDataParallel``: DDP arms its gradient hooks in ``forward``, and pyromm's objectives call
model methods (``encode``, ``decode``, ``joint``), never ``model.forward``, so DDP would not all-reduce. One
flat all-reduce after ``backward`` averages the same gradients (it does not overlap communication with the
backward pass). A parameter without a gradient on some rank counts as a zero gradient there; it gets a
gradient only if some rank produced one, so every rank's optimizer sees the same set.

Sampling noise differs between ranks: rank r > 0 seeds torch, numpy and ``random`` with a seed derived from
(seed, r); rank 0 keeps ``seed``. Checkpoints hold every rank's RNG state, so a resume with the same number
of ranks continues every noise stream.
"""
from __future__ import annotations

import atexit
import os
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.infer.objective import ObjectiveOutput
from pyromm.train.checkpoint import capture_rng_state, restore_rng_state


@dataclass(frozen=True)
class DataParallel:
    """Rank ``rank`` of ``world_size`` processes of an initialised default process group."""

    rank: int
    world_size: int

    @classmethod
    def from_process_group(cls) -> "DataParallel":
        """The rank and size of the initialised default process group."""
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call init_process_group first")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics and evaluations."""
        return self.rank == 0

    def check(self, batch_size: int, drop_last: bool) -> None:
        """Equal shards: ``batch_size`` divisible by ``world_size``, and incomplete global batches dropped."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {self.world_size} ranks")
        if not drop_last:
            raise ValueError("data-parallel training needs drop_last=True (equal shards on every rank)")

    def seed_globals(self, seed: int) -> None:
        """Seed torch, numpy and ``random`` with ``seed`` on rank 0, and on rank r > 0 with a seed drawn from
        ``numpy.random.SeedSequence([seed, r])``."""
        if self.rank > 0:
            seed = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def gather_rng_states(self) -> list[dict[str, Any]]:
        """Every rank's global RNG state (``capture_rng_state``), in rank order."""
        return self.gather_object(capture_rng_state())

    def restore_rng_states(self, states: list[dict[str, Any]] | None, seed: int, step: int) -> None:
        """This rank's entry of ``states`` when they come from as many ranks; otherwise ranks r > 0 start fresh
        streams seeded with ``seed_globals(seed + step)`` (rank 0 keeps the state the trainer restored)."""
        if states is not None and len(states) == self.world_size:
            restore_rng_state(states[self.rank])
        elif self.rank > 0:
            self.seed_globals(seed + step)

    def shard(self, batch: MultimodalBatch) -> MultimodalBatch:
        """This rank's samples ``[r·B/W, (r+1)·B/W)`` of the global batch."""
        size = batch.batch_size // self.world_size
        index = slice(self.rank * size, (self.rank + 1) * size)
        return MultimodalBatch(
            {k: v[index] for k, v in batch.data.items()},
            None if batch.mask is None else {k: v[index] for k, v in batch.mask.items()},
            None if batch.labels is None else batch.labels[index],
        )

    def shard_dataset(self, data: MultimodalDataset) -> MultimodalDataset:
        """Samples r, r + W, r + 2W, ... of ``data`` (for evaluation; every rank must get at least one)."""
        if len(data) < self.world_size:
            raise ValueError(f"{len(data)} samples cannot be spread over {self.world_size} ranks")
        return data.subset(torch.arange(self.rank, len(data), self.world_size))

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``."""
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average(self, out: ObjectiveOutput, params: Iterable[nn.Parameter]) -> ObjectiveOutput:
        """Average the gradients of ``params`` over ranks in place; return the loss and terms averaged too.

        One all-reduce of [loss, terms, has-gradient flags, gradients] (missing gradients as zeros). The flags
        are read (a host sync) only on a rank that lacks some gradient: a gradient present here is present in
        the union.
        """
        params = list(params)
        terms = list(out.terms.items())
        device = out.loss.device
        head = [out.loss.detach().reshape(1)] + [v.detach().reshape(1) for _, v in terms]
        flags = [torch.full((1,), float(p.grad is not None), device=device) for p in params]
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device) for p in params]
        parts = head + flags + grads
        dtype = _common_dtype(parts)
        flat = torch.cat([t.to(dtype) for t in parts])
        dist.all_reduce(flat)
        flat /= self.world_size
        values = flat[: len(head)].to(out.loss.dtype)
        if any(p.grad is None for p in params):
            has_grad = (flat[len(head) : len(head) + len(params)] > 0).tolist()
        else:
            has_grad = [True] * len(params)
        offset = len(head) + len(params)
        for param, present in zip(params, has_grad):
            chunk = flat[offset : offset + param.numel()]
            offset += param.numel()
            param.grad = chunk.view_as(param).to(param.dtype).clone() if present else None
        return ObjectiveOutput(values[0], {name: values[i + 1] for i, (name, _) in enumerate(terms)})

    def mean_over_ranks(self, sums: Mapping[str, Tensor], counts: Mapping[str, int]) -> dict[str, float]:
        """Σ_r sums_r[k] / Σ_r counts_r[k] for every key (the same keys on every rank)."""
        keys = list(sums)
        if not keys:
            return {}
        totals = torch.stack([sums[k].double() for k in keys])
        numbers = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64, device=totals.device)
        flat = torch.cat([totals, numbers])
        dist.all_reduce(flat)
        return dict(zip(keys, (flat[: len(keys)] / flat[len(keys) :]).tolist()))

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (pickled; between the processes of one run only)."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def data_parallel_from_env(device: str) -> tuple[DataParallel | None, str]:
    """(DataParallel, this rank's device) under ``torchrun`` (``WORLD_SIZE`` > 1), else (None, ``device``).

    Initialises the default process group from the environment when it is not yet: backend 'nccl' for a CUDA
    ``device`` (each rank on ``cuda:LOCAL_RANK``), 'gloo' otherwise; it is destroyed at exit.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        atexit.register(dist.destroy_process_group)
    return DataParallel.from_process_group(), device


def is_main_process() -> bool:
    """False only on ranks other than 0 of an initialised process group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def _common_dtype(tensors: Iterable[Tensor]) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
