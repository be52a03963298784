"""Speed-ups of the training step: ``torch.compile`` of the networks and bf16 autocast (opt-in), and
flushing denormal floats on a CPU (on by default).

* :func:`compile_networks`: every encoder, decoder and joint encoder of the model compiled in place
  (``nn.Module.compile``), each into one graph. The objective itself stays eager: it runs the model's Pyro
  programs, whose effect handlers dynamo cannot trace without breaking the graph at every sample site, and
  its tensor work (densities of diagonal Gaussians, a logsumexp) is small next to the networks'. It pays where
  a step is bound by per-kernel overhead (small networks, on a GPU above all); the first call takes seconds.
* :func:`autocast`: the objective's forward pass under ``torch.autocast(device, bfloat16)``; the backward
  pass and the optimizer stay outside. The models compute their distribution parameters in at least float32
  (``pyromm.models.base.at_least_float32``), so only the networks run in bf16.
* :func:`flushing_denormals`: float32 values below 2^-126 (~1.2e-38) read as zero while the context is open.
  x86 CPUs process denormal operands many times slower; MMVAE's and MMVAE+'s peaked importance weights send
  5-10 % denormal gradients to the decoders after a few steps, and each step then runs slower than the last
  (``benchmarks/multivae_compare.py``). The change to any value is below 1.2e-38 in absolute size.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch
from torch import nn


AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


NETWORK_GROUPS = ("encoders", "decoders", "joint_encoder")


def compile_networks(model: nn.Module, backend: str = "inductor") -> list[nn.Module]:
    """Compile in place (``nn.Module.compile``) each network of ``model``'s ``encoders`` and ``decoders`` and its
    ``joint_encoder``; returns the compiled modules. Parameters and state dicts are unchanged."""
    compiled = []
    for group in NETWORK_GROUPS:
        networks = getattr(model, group, None)
        if networks is None:
            continue
        for network in networks.values() if isinstance(networks, nn.ModuleDict) else [networks]:
            network.compile(backend=backend)
            compiled.append(network)
    return compiled


def denormals_flushed() -> bool:
    """Whether this process flushes denormal floats to zero now (a denormal float32 times 1 reads as 0)."""
    return bool(torch.tensor([1e-39], dtype=torch.float32).mul(1.0).eq(0).item())


@contextlib.contextmanager
def flushing_denormals(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero on a CPU ``device`` (``torch.set_flush_denormal``, process-wide) while the
    context is open, then restore the previous setting; a no-op on other devices, with ``enabled=False``, or
    where the CPU does not support it."""
    if not enabled or device.type != "cpu":
        yield
        return
    before = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def check_autocast(mode: str | None) -> str | None:
    """``mode`` when it is None or a key of ``AUTOCAST_DTYPES``, else a ValueError naming the choices."""
    if mode is not None and mode not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None or one of {sorted(AUTOCAST_DTYPES)}, got {mode!r}")
    return mode


def autocast(device: torch.device, mode: str | None) -> ContextManager:
    """``torch.autocast`` on ``device`` in the dtype of ``mode`` ('bf16'); a null context for None."""
    if mode is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[mode])
