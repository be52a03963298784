"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pyro
import pytest
import torch


def _shared_data_candidates() -> list[Path]:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("PYROMM_DATA"):
        candidates.append(Path(os.environ["PYROMM_DATA"]).expanduser())
    return candidates


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The offline data folder: ``<repo>/../shared/data``, else ``$PYROMM_DATA``; skips if neither exists."""
    candidates = _shared_data_candidates()
    for root in candidates:
        if root.is_dir():
            return root
    pytest.skip(f"shared data folder not found (looked in {', '.join(map(str, candidates))})")


@pytest.fixture
def require_shared_file(shared_data_root: Path) -> Callable[..., Path]:
    """``require_shared_file(*relative_paths)``: the shared data root, skipping the test naming the first missing file."""

    def require(*relative_paths: str) -> Path:
        for relative in relative_paths:
            if not (shared_data_root / relative).is_file():
                pytest.skip(f"shared data file missing: {shared_data_root / relative}")
        return shared_data_root

    return require


@pytest.fixture(autouse=True)
def _pyro_validation():
    """Every test runs with Pyro (and torch.distributions) validation on, whatever an earlier test left."""
    with pyro.validation_enabled(True):
        yield


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Derived files (generated datasets, classifiers) go to a session temp dir unless PYROMM_CACHE is set."""
    if os.environ.get("PYROMM_CACHE"):
        yield
        return
    os.environ["PYROMM_CACHE"] = str(tmp_path_factory.mktemp("pyromm_cache"))
    yield
    del os.environ["PYROMM_CACHE"]


@pytest.fixture
def one_thread():
    """Run a test on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
