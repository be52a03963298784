"""Hyper-parameter schedules: ``schedule(step, epoch) -> float``, evaluated by the trainer every step.

``step`` is the global optimizer step t (0 for the first step) and ``epoch`` the 1-based epoch.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping

_EPS = 1e-10


class Schedule(ABC):
    """A value that depends on the optimizer step and the epoch.

    Subclasses implement ``__call__`` and ``bounds``; ``config`` assumes a dataclass (fields = settings).
    """

    kind: ClassVar[str]

    @abstractmethod
    def __call__(self, step: int, epoch: int) -> float: ...

    @abstractmethod
    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value the schedule can take."""

    def config(self) -> dict[str, Any]:
        """A JSON-able description; ``schedule_from_config(s.config())`` rebuilds ``s``."""
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class Constant(Schedule):
    """α(t) = value."""

    kind: ClassVar[str] = "constant"
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("value", self.value))

    def __call__(self, step: int, epoch: int) -> float:
        return self.value

    def bounds(self) -> tuple[float, float]:
        return self.value, self.value


@dataclass(frozen=True)
class _Annealing(Schedule):
    """Moves from ``init`` (t = 0) to ``final`` (t >= ``steps``) over ``steps`` optimizer steps."""

    init: float
    final: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "init", _finite("init", self.init))
        object.__setattr__(self, "final", _finite("final", self.final))
        _positive_int("steps", self.steps)

    def bounds(self) -> tuple[float, float]:
        return min(self.init, self.final), max(self.init, self.final)


@dataclass(frozen=True)
class Linear(_Annealing):
    """α(t) = (1 − t/T)·α0 + (t/T)·α1 for t < T, α1 after."""

    kind: ClassVar[str] = "linear"

    def __call__(self, step: int, epoch: int) -> float:
        if step >= self.steps:
            return self.final
        frac = step / self.steps
        return (1.0 - frac) * self.init + frac * self.final


@dataclass(frozen=True)
class Cosine(_Annealing):
    """α(t) = α1 + ½(α0 − α1)(1 + cos(πt/T)) for t < T, α1 after."""

    kind: ClassVar[str] = "cosine"

    def __call__(self, step: int, epoch: int) -> float:
        if step >= self.steps:
            return self.final
        return self.final + 0.5 * (self.init - self.final) * (1.0 + math.cos(math.pi * step / self.steps))


@dataclass(frozen=True)
class Exponential(_Annealing):
    """α(t) = max(α0·exp(t·[ln(α1 + 1e-10) − ln(α0 + 1e-10)]/T), α1).

    A decay from α0 to α1 (the MMVM reference formula); for α1 > α0 the ``max`` makes it α1 from t = 0.
    """

    kind: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init < 0 or self.final < 0:
            raise ValueError(f"Exponential needs init >= 0 and final >= 0, got init={self.init}, final={self.final}")

    def __call__(self, step: int, epoch: int) -> float:
        rate = (math.log(self.final + _EPS) - math.log(self.init + _EPS)) / self.steps
        return max(self.init * math.exp(step * rate), self.final)


@dataclass(frozen=True)
class EpochWarmup(Schedule):
    """α(e) = value·min(1, e / warmup_epochs) for the 1-based epoch e (JMVAE warm-up)."""

    kind: ClassVar[str] = "epoch_warmup"
    value: float
    warmup_epochs: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("value", self.value))
        _positive_int("warmup_epochs", self.warmup_epochs)

    def __call__(self, step: int, epoch: int) -> float:
        return self.value * min(1.0, epoch / self.warmup_epochs)

    def bounds(self) -> tuple[float, float]:
        return min(0.0, self.value), max(0.0, self.value)


_KINDS: dict[str, type[Schedule]] = {cls.kind: cls for cls in (Constant, Linear, Cosine, Exponential, EpochWarmup)}


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from ``Schedule.config()`` output, e.g. ``{"kind": "linear", "init": 0, ...}``."""
    params = dict(config)
    kind = params.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; known kinds are {sorted(_KINDS)}")
    return _KINDS[kind](**params)


def as_schedule(value: Schedule | float) -> Schedule:
    """A schedule as is; a plain number becomes ``Constant(value)``."""
    if isinstance(value, Schedule):
        return value
    return Constant(_finite("schedule value", value))
