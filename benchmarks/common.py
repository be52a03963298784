"""What every benchmark script records with its results, and how it times a call."""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import resource
import time
from typing import Callable

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: torch.device) -> dict:
    """The machine, library versions, thread count, date and load a result was measured with."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": version("pyro-ppl"),
        "nflows": version("nflows"),
        "loadavg": os.getloadavg(),
    }


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call of ``fn``; on CUDA the wall clock stops after a sync."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.process_time() - c0, time.perf_counter() - w0


def clock(device: torch.device) -> str:
    """The clock step times are compared on: process CPU time on a CPU (with one thread, the step's own
    compute, robust to other load on a shared machine), wall time on a GPU."""
    return "wall" if device.type == "cuda" else "cpu"


def max_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every timing script shares: --threads, --device, --json and --keep-denormals."""
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: shared machine)")
    parser.add_argument("--device", type=torch.device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the environment and results here")
    add_denormal_option(parser)


def add_denormal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush denormal floats to zero (pyromm's Trainer flushes them while it trains on a CPU)")


def flush_denormals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Flush denormal floats to zero for the whole process unless ``--keep-denormals``, as ``Trainer`` does on a
    CPU (``torch.set_flush_denormal``); returns whether they are flushed."""
    if args.keep_denormals:
        return False
    if not torch.set_flush_denormal(True):
        parser.error("this CPU cannot flush denormals to zero; run with --keep-denormals")
    return True
