"""In-memory multimodal datasets that batch by slicing resident tensors (no DataLoader workers)."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch


class DataValidationError(ValueError):
    """Raised when a dataset or batch breaks the multimodal data contract."""


class MultimodalDataset:
    """N samples over named modalities, held as tensors (optionally on an accelerator).

    ``data[m]``: ``(N, *event_shape_m)``; ``mask[m]``: optional ``(N,)`` bool, True = observed;
    ``labels``: optional ``(N,)`` long. Integer image data (uint8) is stored as is and scaled to
    [0, 1] float when batched, so a 60k-sample PolyMNIST stays small in memory.
    """

    def __init__(
        self,
        data: Mapping[str, Tensor],
        labels: Tensor | None = None,
        mask: Mapping[str, Tensor] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.data = {k: torch.as_tensor(v) for k, v in data.items()}
        self.labels = None if labels is None else torch.as_tensor(labels)
        self.mask = None if mask is None else {k: _as_mask(k, v) for k, v in mask.items()}
        self.metadata = dict(metadata or {})
        self.validate()

    @property
    def modalities(self) -> list[str]:
        return list(self.data)

    @property
    def event_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.data.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.data.values())).device

    def __len__(self) -> int:
        return next(iter(self.data.values())).shape[0]

    def validate(self) -> None:
        """Check lengths, masks, finiteness and that every sample observes some modality."""
        if not self.data:
            raise DataValidationError("dataset has no modalities")
        lengths = {k: v.shape[0] for k, v in self.data.items()}
        n = next(iter(lengths.values()))
        if n == 0:
            raise DataValidationError("dataset is empty (0 samples)")
        for name, length in lengths.items():
            if length != n:
                raise DataValidationError(f"modality {name!r} has {length} samples, expected {n} ({lengths})")
            x = self.data[name]
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).reshape(n, -1).any(1).nonzero()[0])
                raise DataValidationError(f"modality {name!r} contains NaN or inf (first at sample {bad})")
        if self.labels is not None and self.labels.shape[0] != n:
            raise DataValidationError(f"labels have {self.labels.shape[0]} entries, expected {n}")
        if self.mask is not None:
            for name, m in self.mask.items():
                if name not in self.data:
                    raise DataValidationError(f"mask names unknown modality {name!r}; modalities are {self.modalities}")
                if m.shape != (n,):
                    raise DataValidationError(f"mask of modality {name!r} has shape {tuple(m.shape)}, expected ({n},)")
            observed = torch.stack([self.mask.get(k, torch.ones(n, dtype=torch.bool)) for k in self.data]).any(0)
            if not bool(observed.all()):
                bad = int((~observed).nonzero()[0])
                raise DataValidationError(f"sample {bad} has every modality masked (no observed modality)")

    def to(self, device: torch.device | str) -> "MultimodalDataset":
        out = MultimodalDataset.__new__(MultimodalDataset)
        out.data = {k: v.to(device) for k, v in self.data.items()}
        out.labels = None if self.labels is None else self.labels.to(device)
        out.mask = None if self.mask is None else {k: v.to(device) for k, v in self.mask.items()}
        out.metadata = dict(self.metadata)
        return out

    def subset(self, index: Tensor | slice) -> "MultimodalDataset":
        """The samples at ``index`` as a new dataset (shares nothing mutable with this one)."""
        return MultimodalDataset(
            {k: v[index] for k, v in self.data.items()},
            None if self.labels is None else self.labels[index],
            None if self.mask is None else {k: v[index] for k, v in self.mask.items()},
            self.metadata,
        )

    def batch(self, index: Tensor | slice) -> MultimodalBatch:
        """The samples at ``index`` as a float batch (uint8 images scaled to [0, 1])."""
        return MultimodalBatch(
            {k: _as_float(v[index]) for k, v in self.data.items()},
            None if self.mask is None else {k: v[index] for k, v in self.mask.items()},
            None if self.labels is None else self.labels[index],
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[MultimodalBatch]:
        """Iterate over batches; the permutation is drawn on CPU from ``generator`` (reproducible)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def _as_mask(name: str, mask: Any) -> Tensor:
    """``mask`` as a bool tensor; numeric masks must hold only 0 and 1 (anything else is not a yes/no)."""
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        bad = mask[(mask != 0) & (mask != 1)]
        if bad.numel():
            raise DataValidationError(
                f"mask of modality {name!r} must be boolean (True = observed) or 0/1, got {mask.dtype} values such as "
                f"{bad.reshape(-1)[0].item()}"
            )
    return mask.to(torch.bool)


def _as_float(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x
