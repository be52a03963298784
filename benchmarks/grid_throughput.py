"""Runs per hour of a small grid (β values × seeds): one at a time, concurrently in a process pool, vectorized.

Every run trains the same model (MLP networks of ``--hidden`` units, default 256-256, latent 16, Laplace(0.75)) on the
embedded 3-view digits for ``--epochs`` epochs of batches of 128 (training only: evaluation costs the same in
every mode). The grid is ``--betas`` × ``--seeds``. Every process uses ``--threads`` torch threads (default 1), so
on a CPU the pool also uses ``--workers`` times the cores of the other modes (column "cores"): more threads per
process instead would be the like-for-like comparison, but on a shared, loaded machine multi-threaded ops stall
on descheduled threads (measured on the 2-core machine at load 8: the one-at-a-time grid took 252 s with 2
threads, 5.3 s with 1).

* one at a time: each run through ``pyromm.train.Trainer`` in this process;
* one at a time, functional step: each run alone through ``pyromm.train.vectorized.VectorizedRuns`` (K = 1),
  which separates the trainer's bookkeeping from what vectorization gains;
* process pool: ``--workers`` spawned processes sharing the device, every run through the Trainer. Timed twice: cold (the pool starts with the grid: interpreter, imports) and warm
  (every worker has imported pyromm and built an optimizer before the clock starts);
* vectorized: all K runs in one process with stacked parameters (``torch.func.vmap`` + ``functional_call``,
  one Adam over the stacked tensors: the runs' own Adam steps).

runs/hour = K · 3600 / wall seconds; the ratios are against one at a time through the Trainer. On CUDA the
clock stops after ``torch.cuda.synchronize()``.

    OMP_NUM_THREADS=1 python benchmarks/grid_throughput.py [--betas 0.25 1 4] [--seeds 0 1] [--epochs 3]
        [--model mmvm] [--hidden 256 256] [--workers 2] [--threads 1] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset, load_digits_multiview
from pyromm.run import build_model, build_objective, build_schedules
from pyromm.train import Trainer
from pyromm.train.vectorized import VectorizedRuns, stacked_batches


def digits(device: str) -> MultimodalDataset:
    return load_digits_multiview("train", 3, seed=0).to(device)


def grid(args: argparse.Namespace) -> list[RunConfig]:
    constant_alpha = {"alpha": 0.0} if args.model == "mmvm" else {}  # VectorizedRuns takes constant schedules
    base = RunConfig(dataset="digits", num_views=3, model=args.model, hidden=args.hidden, epochs=args.epochs,
                     device=args.device, **constant_alpha)
    return [base.replace(beta=float(beta), seed=seed) for beta in args.betas for seed in args.seeds]


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train_one(cfg: RunConfig, threads: int) -> float:
    """One run through the Trainer; returns its last epoch's mean training loss."""
    torch.set_num_threads(threads)
    data = digits(cfg.device)
    model = build_model(cfg, data.event_shapes)
    trainer = Trainer(
        model, build_objective(cfg), lr=cfg.lr, schedules=build_schedules(cfg, data.num_batches(cfg.batch_size, True)),
        batch_size=cfg.batch_size, epochs=cfg.epochs, device=cfg.device, seed=cfg.seed, progress=False,
    )
    return trainer.fit(data)[-1]["train/loss"]


def vectorized(
    configs: list[RunConfig], data: MultimodalDataset
) -> tuple[VectorizedRuns, dict, list[torch.Generator]]:
    """The runs of ``configs`` (same architecture, constant schedules) as one VectorizedRuns on the first config's
    device, their hyper (β: one per run) and their data-order generators (one per seed)."""
    first = configs[0]
    models = [build_model(cfg, data.event_shapes).to(first.device) for cfg in configs]
    runs = VectorizedRuns(models, build_objective(first), lr=first.lr)
    hyper = {k: v for k, v in build_schedules(first, 1).items() if k != "beta"}
    hyper["beta"] = torch.tensor([cfg.beta for cfg in configs], device=first.device)
    return runs, hyper, [torch.Generator().manual_seed(cfg.seed) for cfg in configs]


def train_vectorized(configs: list[RunConfig], data: MultimodalDataset) -> list[float]:
    """All runs of ``configs`` (same architecture, constant schedules) in one VectorizedRuns; returns each run's
    last epoch's mean training loss."""
    first = configs[0]
    runs, hyper, generators = vectorized(configs, data)
    torch.manual_seed(first.seed)
    for _ in range(first.epochs):
        losses = torch.stack([runs.step(batch, hyper)[0] for batch in stacked_batches(data, generators, first.batch_size)])
    return losses.mean(0).tolist()


def warm_worker(threads: int, barrier) -> int:
    """Import pyromm, build an optimizer (torch imports its compiler stack then), wait for every worker."""
    torch.set_num_threads(threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    barrier.wait()
    return os.getpid()


def timed(label: str, device: str, fn) -> tuple[float, list[float]]:
    sync(device)
    start = time.perf_counter()
    losses = fn()
    sync(device)
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds, losses


def pool_run(configs: list[RunConfig], workers: int, threads: int, warm: bool) -> tuple[float, list[float]]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        if warm:
            with context.Manager() as manager:
                barrier = manager.Barrier(workers)
                pids = set(pool.map(warm_worker, [threads] * workers, [barrier] * workers))
            assert len(pids) == workers
        start = time.perf_counter()
        losses = list(pool.map(train_one, configs, [threads] * len(configs)))
        seconds = time.perf_counter() - start
    print(f"  process pool, {'warm' if warm else 'cold'}: {seconds:.1f} s", flush=True)
    return seconds, losses


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--betas", type=float, nargs="+", default=[0.25, 1.0, 4.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="mmvm", help="a RunConfig model with constant schedules (default: mmvm)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP hidden sizes")
    p.add_argument("--workers", type=int, default=2, help="process-pool size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the environment and results here")
    args = p.parse_args(argv)
    configs = grid(args)
    k = len(configs)
    torch.set_num_threads(args.threads)
    data = digits(args.device)
    print(f"grid: {args.model}, {len(args.betas)} betas x {len(args.seeds)} seeds = {k} runs of {args.epochs} epochs "
          f"({data.num_batches(128, True)} steps each) on {args.device}, {args.threads} threads per process", flush=True)
    train_one(configs[0].replace(epochs=1), args.threads)  # warm-up: lazy imports, allocator
    train_vectorized([c.replace(epochs=1) for c in configs[:2]], data)

    results = {}
    results["one at a time (Trainer)"] = timed("one at a time", args.device, lambda: [train_one(c, args.threads) for c in configs])
    results["one at a time (functional step)"] = timed(
        "functional step", args.device, lambda: [train_vectorized([c], data)[0] for c in configs]
    )
    results[f"process pool, {args.workers} workers, cold"] = pool_run(configs, args.workers, args.threads, warm=False)
    results[f"process pool, {args.workers} workers, warm"] = pool_run(configs, args.workers, args.threads, warm=True)
    results[f"vectorized, K = {k}"] = timed("vectorized", args.device, lambda: train_vectorized(configs, data))

    baseline = results["one at a time (Trainer)"][0]
    rows = [
        {"mode": mode, "cores": args.threads * (args.workers if mode.startswith("process pool") else 1),
         "seconds": seconds, "runs_per_hour": k * 3600 / seconds, "ratio": baseline / seconds,
         "final_loss_mean": sum(losses) / len(losses)}
        for mode, (seconds, losses) in results.items()
    ]
    env = {"device": args.device, "threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__, "cpu": platform.processor(),
           "loadavg": os.getloadavg(), "runs": k, "epochs": args.epochs, "model": args.model, "hidden": args.hidden}
    print(json.dumps(env))
    print(f"{'mode':<36}{'cores':>6}{'wall s':>9}{'runs/hour':>11}{'ratio':>8}{'final loss':>12}")
    for r in rows:
        print(f"{r['mode']:<36}{r['cores']:>6}{r['seconds']:>9.1f}{r['runs_per_hour']:>11.0f}{r['ratio']:>8.2f}"
              f"{r['final_loss_mean']:>12.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
