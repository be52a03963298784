"""The objective contract shared by every model and the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch


@dataclass
class ObjectiveOutput:
    """A scalar ``loss`` to minimise and detached per-term tensors for logging.

    Convention for every model: ``loss`` is a mean over the batch of a per-sample negative objective
    whose terms are summed over modalities and over data dimensions (as the MMVM reference code).
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Objective(Protocol):
    """``objective(model, batch, hyper) -> ObjectiveOutput``; ``hyper`` holds schedule values (beta, alpha, ...)."""

    def __call__(self, model: nn.Module, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput: ...
