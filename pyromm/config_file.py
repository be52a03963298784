"""Run configs in TOML, read by the standard library's ``tomllib``, as ``RunConfig`` fields.

Top-level keys are ``RunConfig`` keys (general fields and the method's options). A ``[dataset]`` table names the
data: ``name`` (a registered dataset, or ``"files"``, the default when ``path`` is given), ``path`` (an ``.npz``
file or a directory of ``.npy``/``.pt`` files), the dataset's options (``test_fraction``, ``num_views``, ...) and
any other data field (``train_limit``, ...). Paths (``path``, ``data_root``, ``cache_root``, ``released_path``, ``fid_weights`` and the ``.py`` files
of ``plugins``) are relative to the TOML file's folder. ``[modalities.<name>]`` tables give one modality's ``likelihood``, ``network`` (``mlp``,
``conv``, ``resnet``, ``spike_mlp`` or ``package.module:Name``), ``hidden`` and ``weight``::

    model = "mmvm"
    epochs = 5

    [dataset]
    path = "my_data.npz"

    [modalities.image]
    likelihood = "bernoulli"
    network = "conv"
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pyromm.config import unknown_key_problem
from pyromm.datasets import DATASETS
from pyromm.options import ConfigError, check_value, did_you_mean, option_names
from pyromm.plugins import load_plugins

DATASET_KEYS = {"name": "dataset", "path": "data_path"}
PATH_KEYS = ("data_path", "data_root", "cache_root", "released_path", "fid_weights")
# General fields about the data, allowed in the [dataset] table beside the dataset's own options.
DATA_FIELDS = ("data_root", "cache_root", "train_limit", "test_limit", "keep_probability", "train_complete_only")
_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The ``RunConfig`` fields of the TOML file at ``path``; a ConfigError naming the file (and, for a syntax
    error, the line and column) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: TOML syntax error {_where(str(err))}") from None
    values = dict(document)
    _resolve_paths(path, values)
    check_value("plugins", values.get("plugins", []), list[str])
    load_plugins(values.get("plugins", []))  # before [dataset]: a plugin dataset's options are its keys
    dataset = values.pop("dataset", None)
    if isinstance(dataset, dict):
        fields = _dataset_fields(path, dataset)
        _resolve_paths(path, fields)
        values.update(fields)
    elif dataset is not None:
        values["dataset"] = dataset
    problem = unknown_key_problem(values)
    if problem:
        raise ConfigError(f"config file {path}: {problem}")
    return values


def _where(message: str) -> str:
    """'Invalid value (at line 3, column 1)' -> 'at line 3, column 1: Invalid value'."""
    found = _POSITION.search(message)
    if found is None:
        return f": {message}"
    return f"at line {found.group(1)}, column {found.group(2)}: {message[: found.start()]}"


def _dataset_fields(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """The ``[dataset]`` table as ``RunConfig`` fields (``path`` as ``data_path``, not yet resolved)."""
    name = table.get("name", "files" if "path" in table else None)
    own = option_names(DATASETS[name].Options) if isinstance(name, str) and name in DATASETS else ()
    dataset_keys = [*DATASET_KEYS, *DATA_FIELDS, *own]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("dataset", "data_path", "model") or key not in dataset_keys:
            raise ConfigError(
                f"config file {path}: unknown key {key!r} in [dataset]{did_you_mean(key, dataset_keys)}; its keys are "
                f"name, path, the dataset's options and the data fields {', '.join(DATA_FIELDS)}"
            )
        values[DATASET_KEYS.get(key, key)] = value
    if "data_path" in values:
        values.setdefault("dataset", "files")
    return values


def _resolve_paths(path: Path, values: dict[str, Any]) -> None:
    """The ``PATH_KEYS`` of ``values`` and the ``.py`` files of ``plugins`` made absolute, relative to the config
    file's folder."""
    plugins = values.get("plugins")
    if isinstance(plugins, list):
        values["plugins"] = [
            str((path.parent / Path(p).expanduser()).resolve()) if isinstance(p, str) and p.endswith(".py") else p
            for p in plugins
        ]
    for key in PATH_KEYS:
        if key in values:
            if not isinstance(values[key], str):
                raise ConfigError(f"config file {path}: {key} must be a string (a path), got {values[key]!r}")
            values[key] = str((path.parent / Path(values[key]).expanduser()).resolve())
