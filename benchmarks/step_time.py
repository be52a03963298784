"""Time pyromm's training step of every model against a hand-written PyTorch step of the same math.

The pyromm side is what ``pyromm train`` builds: ``RunConfig`` (PolyMNIST-shaped data, 3 views of (3, 28, 28),
Laplace(0.75) likelihood, β = 1) through ``pyromm.run.build_model`` / ``build_objective``. The hand-written
side (``benchmarks/handwritten.py``) re-implements each objective in plain PyTorch on the very same encoder
and decoder modules. Models (MMVM-code baselines: AVG/PoE/MoE/MoPoE sum their KL once per modality):

    independent, mmvm-jensen, mmvm-mc, avg, poe, moe, mopoe, mopoe_reference (subset-averaged KL, prior
    expert in the full subset), mvae (PoE + prior expert, full set + singletons, k = 0), mvtcae, jmvae,
    mmvae-dreg, mmvae-iwae (looser bound, K = 10), mmvae_plus (ELBO, K = 1), telbo_stage2 (TELBO's second stage:
    the unimodal ELBOs on the unimodal encoders, the rest frozen), jnf_stage2 (JNF's second stage: the unimodal
    encoders and MAF flows fitted to draws of the frozen joint encoder, the model's flow-fit programs)

and, on the general path a user-written prior or model takes, ``mmvm-pyro``: the same MMVM model trained by
Pyro's ``Trace_ELBO`` over the model's own ``model``/``guide`` programs (encoders shared), whose
Monte Carlo rate is the hand-written ``mmvm`` 'mc' rate (no target: it measures what Pyro's tracing costs).

A model trained in stages (JNF) is timed in its last stage, as ``pyromm train`` runs it: that stage's objective,
and only that stage's parameters trainable.

Before timing, both sides compute the loss and gradients from the same weights under the same seed: the
losses must agree to a relative 1e-4 (``loss err``); ``grad err`` is max over parameters of
‖g_pyromm − g_torch‖ / ‖g_pyromm‖ (reported, not asserted: where the two sides round the same formula
differently, e.g. the PoE, a ~1e-7 change of z can flip one ReLU or |x − loc| and move a gradient by ~1e-3).

A step is ``zero_grad; loss; backward; Adam step`` with one optimizer over the model's parameters. After
``--warmup`` steps per side, the two sides alternate step by step for ``--rounds`` rounds of ``--steps``
steps (the side that goes first alternates by round); the table gives the median step time per side and the
ratio pyromm / hand-written (> 1: pyromm is slower). On a CPU the step time is the process CPU time (with one
thread, the step's own compute, robust to other load on a shared machine), with the wall-clock ratio next to
it; on a GPU both are wall-clock after ``torch.cuda.synchronize()``.

``--autocast bf16`` times both sides with their forward passes under bf16 autocast, as the Trainer runs them
(``pyromm.train.acceleration.autocast``); ``--compile BACKEND`` times both sides compiled by ``torch.compile``
(pyromm's networks as the Trainer compiles them, ``compile_networks``; the hand-written loss whole by ``torch.compile``),
after at least two warm-up steps (the first call runs eagerly, the second compiles). The loss check always runs
first, eagerly and in float32.

    python benchmarks/step_time.py --network conv [--models mvae mmvae-dreg] [--steps 10] [--rounds 3] [--threads 1]
        [--autocast bf16] [--compile inductor] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from functools import partial
from pathlib import Path

import pyro
import pyro.infer
import torch

import handwritten as hw  # benchmarks/handwritten.py and common.py, next to this script
from common import add_run_options, clock, flush_denormals, machine, timed
from pyromm.config import RunConfig
from pyromm.modality_options import NETWORKS
from pyromm.data import MultimodalBatch
from pyromm.infer import ELBOObjective
from pyromm.run import build_model, build_objective, build_stages
from pyromm.train.acceleration import AUTOCAST_DTYPES, autocast, compile_networks

IMAGE_SHAPE = (3, 28, 28)
BETA = 1.0
ALPHA = 0.1  # MVTCAE's TC weight, JMVAE's weight of the unimodal KLs
K = 10  # MMVAE's importance samples
LOSS_RTOL = 1e-4

# name -> (RunConfig fields, hand-written loss(nets, xs))
MODELS = {
    "independent": ({"model": "independent"}, partial(hw.independent, beta=BETA)),
    "mmvm-jensen": ({"model": "mmvm", "rate": "jensen"}, partial(hw.mmvm, beta=BETA, rate="jensen")),
    "mmvm-mc": ({"model": "mmvm", "rate": "mc"}, partial(hw.mmvm, beta=BETA, rate="mc")),
    "avg": ({"model": "avg"}, partial(hw.avg, beta=BETA)),
    "poe": ({"model": "poe"}, partial(hw.poe, beta=BETA)),
    "moe": ({"model": "moe"}, partial(hw.moe, beta=BETA)),
    "mopoe": ({"model": "mopoe"}, partial(hw.mopoe, beta=BETA)),
    "mopoe_reference": ({"model": "mopoe_reference"}, partial(hw.mopoe_reference, beta=BETA)),
    "mvae": ({"model": "mvae", "num_random_subsets": 0}, partial(hw.mvae, beta=BETA)),
    "mvtcae": ({"model": "mvtcae", "alpha": ALPHA}, partial(hw.mvtcae, beta=BETA, alpha=ALPHA)),
    "jmvae": ({"model": "jmvae", "alpha": ALPHA}, partial(hw.jmvae, beta=BETA, alpha=ALPHA)),
    "mmvae-dreg": (
        {"model": "mmvae", "num_importance_samples": K, "estimator": "dreg"},
        partial(hw.mmvae, num_samples=K, estimator="dreg"),
    ),
    "mmvae-iwae": (
        {"model": "mmvae", "num_importance_samples": K, "estimator": "iwae"},
        partial(hw.mmvae, num_samples=K, estimator="iwae"),
    ),
    "mmvae_plus": (
        {"model": "mmvae_plus", "num_importance_samples": 1, "estimator": "elbo"},
        partial(hw.mmvae_plus, beta=BETA),
    ),
    "telbo_stage2": ({"model": "telbo"}, partial(hw.independent, beta=BETA)),
    "jnf_stage2": ({"model": "jnf"}, hw.jnf_flows),
    "mmvm-pyro": ({"model": "mmvm", "rate": "mc"}, partial(hw.mmvm, beta=BETA, rate="mc")),
}
GENERAL_PATH = {"mmvm-pyro"}  # trained by Pyro's Trace_ELBO over the model's Pyro programs, not its built-in ELBO


def pyromm_side(name: str, args) -> tuple[torch.nn.Module, object]:
    """The model and objective exactly as ``pyromm train`` builds them for this benchmark's settings; for a model
    trained in stages, the last stage's objective, with every parameter outside that stage frozen."""
    cfg = RunConfig(
        dataset="polymnist",
        num_views=args.views,
        network=args.network,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        likelihood="laplace",
        likelihood_scale=hw.LIKELIHOOD_SCALE,
        beta=BETA,
        seed=0,
        **MODELS[name][0],
    )
    model = build_model(cfg, {f"m{i}": IMAGE_SHAPE for i in range(args.views)}).to(args.device)
    if name in GENERAL_PATH:
        return model, ELBOObjective(pyro.infer.Trace_ELBO())
    stages = build_stages(cfg, model)
    if stages is None:
        return model, build_objective(cfg)
    trainable = {id(p) for p in stages[-1].trainable(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return model, stages[-1].objective


def loss_and_grads(loss_fn, params: list[torch.nn.Parameter]) -> tuple[float, list[torch.Tensor | None]]:
    """The loss under seed 1 and the gradient it gives every parameter."""
    for p in params:
        p.grad = None
    torch.manual_seed(1)
    loss = loss_fn()
    loss.backward()
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return loss.item(), grads


def compare(name: str, pyromm_loss, torch_loss, params) -> tuple[float, float]:
    """(relative loss difference, max relative gradient difference); AssertionError past LOSS_RTOL."""
    a, grads_a = loss_and_grads(pyromm_loss, params)
    b, grads_b = loss_and_grads(torch_loss, params)
    if not math.isclose(a, b, rel_tol=LOSS_RTOL):
        raise AssertionError(f"{name}: pyromm loss {a} != hand-written loss {b}")
    if [g is None for g in grads_a] != [g is None for g in grads_b]:
        raise AssertionError(f"{name}: the two sides give gradients to different parameters")
    grad_err = max(
        ((ga - gb).norm() / ga.norm().clamp_min(1e-30)).item()
        for ga, gb in zip(grads_a, grads_b)
        if ga is not None
    )
    return abs(a - b) / abs(a), grad_err


def bench(name: str, args, batch: MultimodalBatch, xs: list[torch.Tensor]) -> dict:
    """Check, then time, one model: its table row."""
    model, objective = pyromm_side(name, args)
    nets = hw.Nets.of(model)
    reference = MODELS[name][1]
    hyper = {"beta": BETA}
    params = list(model.parameters())
    pyromm_loss = lambda: objective(model, batch, hyper).loss  # noqa: E731
    torch_loss = lambda: reference(nets, xs)  # noqa: E731
    loss_err, grad_err = compare(name, pyromm_loss, torch_loss, params)
    if args.compile:
        compile_networks(model, args.compile)  # the networks both sides share, as the Trainer compiles them
        compiled_reference = torch.compile(reference, backend=args.compile)
        torch_loss = lambda: compiled_reference(nets, xs)  # noqa: E731
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-4)

    def step(loss_fn):
        opt.zero_grad(set_to_none=True)
        with autocast(args.device, args.autocast):
            loss = loss_fn()
        loss.backward()
        opt.step()

    sides = {"pyromm": partial(step, pyromm_loss), "torch": partial(step, torch_loss)}
    for _ in range(args.warmup):
        for fn in sides.values():
            fn()
    times = {side: {"cpu": [], "wall": []} for side in sides}
    for r in range(args.rounds):
        order = ("pyromm", "torch") if r % 2 == 0 else ("torch", "pyromm")
        for _ in range(args.steps):
            for side in order:
                cpu, wall = timed(sides[side], args.device)
                times[side]["cpu"].append(cpu)
                times[side]["wall"].append(wall)
    med = {side: {kind: statistics.median(t) for kind, t in by_kind.items()} for side, by_kind in times.items()}
    on = clock(args.device)
    return {
        "model": name,
        "pyromm_ms": 1e3 * med["pyromm"][on],
        "torch_ms": 1e3 * med["torch"][on],
        "ratio": med["pyromm"][on] / med["torch"][on],
        "wall_ratio": med["pyromm"]["wall"] / med["torch"]["wall"],
        "loss_err": loss_err,
        "grad_err": grad_err,
        "steps_per_side": args.rounds * args.steps,
        "general_path": name in GENERAL_PATH,
    }


def environment(args) -> dict:
    return {
        **machine(args.device),
        "clock": "wall (cuda synchronize)" if args.device.type == "cuda" else "process CPU time",
        "network": args.network,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "views": args.views,
        "steps": args.steps,
        "rounds": args.rounds,
        "autocast": args.autocast,
        "compile": args.compile,
        "validate": args.validate,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--network", choices=NETWORKS, default="conv")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the side that steps first alternates by round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--autocast", choices=sorted(AUTOCAST_DTYPES), help="time the forward passes under this autocast")
    p.add_argument("--compile", metavar="BACKEND", help="time both sides compiled by torch.compile with this backend")
    p.add_argument(
        "--validate", action="store_true",
        help="time pyromm's side with Pyro's validation on (the Trainer's default); off: Trainer(validate=False)",
    )
    add_run_options(p)
    args = p.parse_args(argv)
    if args.compile and args.warmup < 2:
        p.error("--compile needs --warmup >= 2: the first call runs eagerly, the second compiles")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(args.validate)  # as the trainer trains with validate=args.validate
    flushing = flush_denormals(p, args)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(args.batch_size, *IMAGE_SHAPE, generator=g).to(args.device) for _ in range(args.views)]
    batch = MultimodalBatch({f"m{i}": x for i, x in enumerate(xs)})
    env = {**environment(args), "flush_denormal": flushing}
    rows = []
    for name in args.models:
        rows.append(bench(name, args, batch, xs))
        print(f"{name}: done", file=sys.stderr, flush=True)
    env["loadavg_end"] = machine(args.device)["loadavg"]
    print(json.dumps(env))
    header = ("model", "pyromm ms", "torch ms", "ratio", "wall ratio", "loss err", "grad err")
    print(f"{header[0]:<16}" + "".join(f"{h:>11}" for h in header[1:]))
    for r in rows:
        print(
            f"{r['model']:<16}{r['pyromm_ms']:>11.2f}{r['torch_ms']:>11.2f}{r['ratio']:>11.3f}{r['wall_ratio']:>11.3f}"
            f"{r['loss_err']:>11.1e}{r['grad_err']:>11.1e}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
