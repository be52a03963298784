"""Declared options and the registries that hold methods and datasets.

An option is a dataclass field declared with :func:`option`: a default, one line of doc and, where the value is
one of a few names, its choices. :func:`check_options` checks a dataclass instance's values against the declared
types and choices; :func:`describe` lists the options for ``--help``. A :class:`Registry` maps names to entries
(methods, datasets) and answers an unknown name with the names it knows and the closest one.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, Iterator, Protocol, TypeVar


class ConfigError(ValueError):
    """A configuration field has a wrong name, type or value."""


def option(default: Any = dataclasses.MISSING, doc: str = "", *, choices: tuple[Any, ...] | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line ``doc`` and, optionally, the ``choices`` its value must be one of."""
    metadata = {"doc": doc, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as ``--help`` shows it."""

    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None

    def line(self) -> str:
        """``name (type, default D): doc [choices]`` on one line."""
        choices = f" (one of {', '.join(map(str, self.choices))})" if self.choices else ""
        return f"{self.name} ({self.type}, default {self.default!r}): {self.doc}{choices}"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def describe(cls: type) -> list[OptionInfo]:
    """The options a dataclass declares, in declaration order."""
    hints = _hints(cls)
    return [
        OptionInfo(f.name, _type_name(hints[f.name]), _default(f), f.metadata.get("doc", ""), f.metadata.get("choices"))
        for f in dataclasses.fields(cls)
    ]


def option_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` (int, float, str, bool, list[...], dict[...], their unions with None);
    an int is a float, a bool is not an int."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_value(name: str, value: Any, hint: Any, choices: tuple[Any, ...] | None = None) -> None:
    """Raise ConfigError unless ``value`` has the type ``hint``, is finite and is one of ``choices`` (when given)."""
    if not _matches(value, hint):
        raise ConfigError(f"{name} has type {type(value).__name__}, expected {_type_name(hint)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if choices is not None and value is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {tuple(choices)}, got {value!r}{did_you_mean(value, choices)}")


def check_options(obj: Any, owner: str = "") -> None:
    """Check every declared option of the dataclass instance ``obj`` (:func:`check_value`); errors name
    ``owner.option``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        label = f"{owner}.{f.name}" if owner else f.name
        check_value(label, getattr(obj, f.name), hints[f.name], f.metadata.get("choices"))


def did_you_mean(name: Any, candidates: typing.Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to ``name``, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Named(Protocol):
    name: str


Entry = TypeVar("Entry", bound=Named)


class Registry(Generic[Entry]):
    """Named entries of one ``kind`` (``'method'``, ``'dataset'``), in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, entry: Entry) -> Entry:
        """Add ``entry`` under ``entry.name``; a second entry of the same name is refused."""
        if entry.name in self._entries:
            raise ValueError(f"a {self.kind} named {entry.name!r} is already registered; pick another name")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; {self.kind}s are "
                f"{', '.join(self._entries)} (pyromm {self.kind}s lists them with their options)"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method or dataset that has none of its own."""
