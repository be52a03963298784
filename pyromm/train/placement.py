"""Where training data live: resident on the accelerator when they fit, else moved one batch at a time.

A dataset of n bytes is moved to a CUDA device once when n ≤ ``fraction`` · (free device memory); otherwise it
stays in host memory and each batch is copied over (pinned, non-blocking) as it is drawn. On the CPU both are
no-ops; other accelerators (no free-memory query here) always get the dataset moved.
"""
from __future__ import annotations

import torch

from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset


def dataset_nbytes(data: MultimodalDataset) -> int:
    """Bytes held by the dataset's tensors (data, masks, labels)."""
    tensors = [*data.data.values(), *(data.mask or {}).values()]
    if data.labels is not None:
        tensors.append(data.labels)
    return sum(t.numel() * t.element_size() for t in tensors)


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device``; None for any other device."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


def resident(data: MultimodalDataset, device: torch.device, fraction: float) -> MultimodalDataset:
    """``data`` on ``device`` if it fits in ``fraction`` of the free memory there (always off CUDA), else as is."""
    if same_device(data.device, device):
        return data
    free = free_memory(device)
    if free is not None and dataset_nbytes(data) > fraction * free:
        return data
    return data.to(device)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name the same device (a device without index is the current one of its type)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def batch_to(batch: MultimodalBatch, device: torch.device) -> MultimodalBatch:
    """``batch`` on ``device``: itself when already there, else a pinned non-blocking copy (CUDA) or a plain one."""
    if same_device(batch.device, device):
        return batch
    if device.type == "cuda" and batch.device.type == "cpu":
        pinned = MultimodalBatch(
            {k: v.pin_memory() for k, v in batch.data.items()},
            None if batch.mask is None else {k: v.pin_memory() for k, v in batch.mask.items()},
            None if batch.labels is None else batch.labels.pin_memory(),
        )
        return pinned.to(device, non_blocking=True)
    return batch.to(device)
