"""Executors that run the jobs of a grid: a local process pool, or SLURM through submitit (optional extra).

Both expose ``submit(fn, *args)`` returning a handle with ``result()`` (a ``concurrent.futures.Future`` or a
``submitit.Job``), which is all :func:`pyromm.sweep.run_grid` uses.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

LAUNCHERS = ("local", "slurm")


def local_pool(workers: int, threads: int | None = None) -> ProcessPoolExecutor:
    """``workers`` processes started with 'spawn' (fresh interpreters: no forked torch thread pools or CUDA
    contexts), each with ``threads`` torch CPU threads (default: the CPUs divided among the workers)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_set_threads,
        initargs=(threads,),
    )


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def slurm_executor(folder: str | os.PathLike, parameters: Mapping[str, Any] | None = None) -> Any:
    """A ``submitit.AutoExecutor`` writing its logs to ``folder``: SLURM jobs where ``sbatch`` exists, local
    subprocesses otherwise. ``parameters`` go to ``update_parameters`` (e.g. ``timeout_min``,
    ``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``). Needs ``pip install 'pyromm[cluster]'``."""
    try:
        import submitit
    except ImportError as err:
        raise ImportError(
            "the slurm launcher needs the optional package 'submitit': pip install 'pyromm[cluster]'"
        ) from err
    executor = submitit.AutoExecutor(folder=str(folder))
    executor.update_parameters(**dict(parameters or {}))
    return executor


@contextmanager
def open_executor(
    launcher: str,
    workers: int,
    folder: str | os.PathLike,
    slurm: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> Iterator[Any]:
    """The executor of ``launcher``: None (run in this process) for 'local' with one worker, ``local_pool(workers,
    threads)`` for 'local' (shut down on leaving the block), a submitit executor for 'slurm' (each run is one
    job; SLURM decides how many run at once) with its logs in ``folder/slurm``."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "slurm":
        yield slurm_executor(Path(folder) / "slurm", slurm)
    elif workers == 1:
        yield None
    else:
        with local_pool(workers, threads) as pool:
            yield pool
