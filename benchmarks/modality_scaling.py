"""Per-step cost against the number of modalities M: MMVM (jensen), MoPoE and MMVAE at M = 2, 3, 5, 10.

Each model is what ``pyromm train`` builds (``RunConfig`` through ``pyromm.run.build_model`` /
``build_objective``; ``build_model`` takes any number of modalities, ``num_views`` only sizes the built-in
datasets), Laplace(0.75) likelihood, β = 1, on random data of M modalities:

* ``--network mlp`` (default): M modalities of (``--features``,) values in [0, 1], MLP networks of ``--hidden``
  units (64-64) and latent 16: small, so that what the objective does with M is not hidden under network cost;
* ``--network conv``: M PolyMNIST-shaped (3, 28, 28) modalities and the PolyMNIST conv networks.

Models: ``mmvm`` (MMVM prior, 'jensen' rate: the M² closed-form KLs KL(q_m ‖ q_k)), ``mopoe`` (MoPoE of the
MMVM code, 'selected' rate: each sample draws from one of the 2^M − 1 subset products) and ``mmvae`` (DReG,
looser bound, ``--k`` importance samples: each of the K·M draws is decoded by all M decoders).

A step is ``zero_grad; loss; backward; Adam step``. After ``--warmup`` steps per (model, M), the Ms take turns
for ``--rounds`` rounds of ``--steps`` steps (the order reverses every round); the table gives the median step
time (process CPU time on a CPU, wall time after a sync on a GPU), the time per modality, and the rows pushed
through the encoders and decoders per step in batches (forward hooks), with the time per such network pass.
The growth exponent is the least-squares slope of log(step time) against log M (1: linear, 2: quadratic),
over all Ms and over the last two; the exponent per pass is that of the time per network pass (0: the step grows
exactly as the network passes the model's math makes).

    OMP_NUM_THREADS=1 python benchmarks/modality_scaling.py --threads 1 [--network mlp|conv] [--ms 2 3 5 10]
        [--models mmvm mopoe mmvae] [--batch-size 128] [--steps 10] [--rounds 3] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pyro
import torch

from common import add_run_options, clock, flush_denormals, machine, timed  # benchmarks/common.py, next to this script
from pyromm.config import RunConfig
from pyromm.data import MultimodalBatch
from pyromm.run import build_model, build_objective

MODELS = {
    "mmvm": {"model": "mmvm", "rate": "jensen"},
    "mopoe": {"model": "mopoe"},
    "mmvae": {"model": "mmvae", "estimator": "dreg"},
}
IMAGE_SHAPE = (3, 28, 28)


def setup(name: str, m: int, args) -> dict:
    """Model, objective, Adam, a random batch of m modalities and the step."""
    cfg = RunConfig(
        network=args.network,
        hidden=args.hidden,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        likelihood="laplace",
        likelihood_scale=0.75,
        **MODELS[name],
        **({"num_importance_samples": args.k} if name == "mmvae" else {}),
    )
    shape = IMAGE_SHAPE if args.network == "conv" else (args.features,)
    model = build_model(cfg, {f"m{i}": shape for i in range(m)}).to(args.device)
    objective = build_objective(cfg)
    g = torch.Generator().manual_seed(m)
    batch = MultimodalBatch(
        {f"m{i}": torch.rand(args.batch_size, *shape, generator=g).to(args.device) for i in range(m)}
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    hyper = {"beta": 1.0}

    def step():
        opt.zero_grad(set_to_none=True)
        objective(model, batch, hyper).loss.backward()
        opt.step()

    return {"model": model, "step": step}


def network_passes(run: dict, batch_size: int) -> dict[str, float]:
    """Rows through the encoders and decoders in one step, in batches of ``batch_size``."""
    rows = {"encoder": 0, "decoder": 0}
    model = run["model"]
    handles = []
    for kind, modules in (("encoder", model.encoders), ("decoder", model.decoders)):
        for module in modules.values():
            def count(_module, inputs, _output, kind=kind):
                rows[kind] += inputs[0].shape[0]

            handles.append(module.register_forward_hook(count))
    run["step"]()
    for handle in handles:
        handle.remove()
    return {kind: n / batch_size for kind, n in rows.items()}


def exponent(ms: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(M)."""
    return float(np.polyfit(np.log(ms), np.log(seconds), 1)[0])


def bench(name: str, args) -> tuple[list[dict], dict]:
    """Time one model at every M: its rows and its growth exponents."""
    runs = {m: setup(name, m, args) for m in args.ms}
    passes = {m: network_passes(run, args.batch_size) for m, run in runs.items()}
    for run in runs.values():
        for _ in range(args.warmup):
            run["step"]()
    times = {m: [] for m in args.ms}
    for r in range(args.rounds):
        for m in args.ms if r % 2 == 0 else reversed(args.ms):
            for _ in range(args.steps):
                cpu, wall = timed(runs[m]["step"], args.device)
                times[m].append(wall if clock(args.device) == "wall" else cpu)
    rows = []
    for m in args.ms:
        seconds = statistics.median(times[m])
        total_passes = passes[m]["encoder"] + passes[m]["decoder"]
        rows.append({
            "model": name, "M": m, "ms": 1e3 * seconds, "ms_per_M": 1e3 * seconds / m,
            "encoder_passes": passes[m]["encoder"], "decoder_passes": passes[m]["decoder"],
            "ms_per_pass": 1e3 * seconds / total_passes,
        })
    seconds, per_pass = [r["ms"] for r in rows], [r["ms_per_pass"] for r in rows]
    fit = {"exponent": exponent(args.ms, seconds), "exponent_per_pass": exponent(args.ms, per_pass)}
    if len(args.ms) > 2:
        fit["exponent_last_two"] = exponent(args.ms[-2:], seconds[-2:])
    return rows, fit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--ms", type=int, nargs="+", default=[2, 3, 5, 10], help="numbers of modalities, increasing")
    p.add_argument("--network", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--features", type=int, default=64, help="mlp: features per modality")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="mlp: hidden sizes")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--k", type=int, default=10, help="MMVAE's importance samples")
    p.add_argument("--steps", type=int, default=10, help="timed steps per M per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per (model, M) first")
    add_run_options(p)
    args = p.parse_args(argv)
    if len(args.ms) < 2 or sorted(set(args.ms)) != args.ms or args.ms[0] < 1:
        p.error("--ms needs at least two increasing numbers of modalities >= 1")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # as the trainer trains
    env = {**machine(args.device), "flush_denormal": flush_denormals(p, args)}
    settings = {k: str(v) if isinstance(v, torch.device) else v for k, v in vars(args).items()}
    rows, fits = [], {}
    for name in args.models:
        model_rows, fits[name] = bench(name, args)
        rows += model_rows
        print(f"{name}: done", file=sys.stderr, flush=True)
    env["loadavg_end"] = machine(args.device)["loadavg"]
    print(json.dumps(env))
    print(f"{args.network} networks, batch {args.batch_size}; median {clock(args.device)} ms per step")
    header = ("model", "M", "ms/step", "ms/step/M", "enc passes", "dec passes", "ms/pass")
    print(f"{header[0]:<8}{header[1]:>4}" + "".join(f"{h:>12}" for h in header[2:]))
    for r in rows:
        print(
            f"{r['model']:<8}{r['M']:>4}{r['ms']:>12.2f}{r['ms_per_M']:>12.2f}{r['encoder_passes']:>12g}"
            f"{r['decoder_passes']:>12g}{r['ms_per_pass']:>12.3f}"
        )
    for name, fit in fits.items():
        last = f"; M = {args.ms[-2]}..{args.ms[-1]}: {fit['exponent_last_two']:.2f}" if len(args.ms) > 2 else ""
        print(f"{name}: growth exponent (log-log slope), M = {args.ms[0]}..{args.ms[-1]}: {fit['exponent']:.2f}{last}; "
              f"per network pass: {fit['exponent_per_pass']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "settings": settings, "rows": rows, "fits": fits}, indent=2))


if __name__ == "__main__":
    main()
