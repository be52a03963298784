"""The multimodal batch contract: modality tensors, per-sample observed masks, labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor


@dataclass
class MultimodalBatch:
    """A batch of B samples over named modalities.

    ``data[m]`` has shape ``(B, *event_shape_m)``. ``mask[m]`` (optional) is a ``(B,)`` bool tensor,
    True where modality ``m`` is observed; a missing mask means every sample is observed.
    ``labels`` (optional) is ``(B,)`` long or ``(B, L)`` for multi-label data, used only by evaluation.
    """

    data: dict[str, Tensor]
    mask: dict[str, Tensor] | None = None
    labels: Tensor | None = None

    @property
    def modalities(self) -> list[str]:
        return list(self.data)

    @property
    def batch_size(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.data.values())).device

    def observed(self, name: str) -> Tensor | None:
        """The ``(B,)`` bool mask of modality ``name``, or None when every sample is observed."""
        if self.mask is None:
            return None
        return self.mask.get(name)

    def select(self, names: Iterable[str]) -> "MultimodalBatch":
        """The same samples restricted to the modalities ``names``."""
        names = list(names)
        unknown = [n for n in names if n not in self.data]
        if unknown:
            raise KeyError(f"unknown modality {unknown[0]!r}; batch has {self.modalities}")
        mask = None if self.mask is None else {n: self.mask[n] for n in names if n in self.mask}
        return MultimodalBatch({n: self.data[n] for n in names}, mask or None, self.labels)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MultimodalBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return MultimodalBatch(
            {k: move(v) for k, v in self.data.items()},
            None if self.mask is None else {k: move(v) for k, v in self.mask.items()},
            None if self.labels is None else move(self.labels),
        )
