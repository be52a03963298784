"""Plug-ins: the files and modules a config names in ``plugins``, imported before its method and dataset are looked up,
so that the methods and datasets they register can be named. Installed packages can register theirs through the
``pyromm.plugins`` entry-point group instead."""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from pyromm.options import ConfigError

ENTRY_POINT_GROUP = "pyromm.plugins"
_loaded_files: dict[Path, ModuleType] = {}


def plugin_path(entry: str) -> str:
    """``entry`` as the config records it: a ``.py`` file as an absolute path, a module name as given."""
    return str(Path(entry).expanduser().resolve()) if entry.endswith(".py") else entry


def load_plugins(entries: Iterable[str]) -> None:
    """Import each entry once: a ``.py`` file by its path, anything else as a module name."""
    for entry in entries:
        if entry.endswith(".py"):
            _load_file(Path(entry))
            continue
        try:
            importlib.import_module(entry)
        except ImportError as err:
            raise ConfigError(f"plugins: cannot import module {entry!r} ({err})") from None


def _load_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if path in _loaded_files:
        return _loaded_files[path]
    if not path.is_file():
        raise ConfigError(f"plugins: file {path} does not exist")
    name = f"pyromm_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugins: cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    _loaded_files[path] = module
    return module


def load_installed_plugins() -> None:
    """Import the modules of the ``pyromm.plugins`` entry points of installed packages."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
