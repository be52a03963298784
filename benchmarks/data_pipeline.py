"""The data pipeline against the training step: samples per second delivered to the device vs consumed, and the
peak memory of a PolyMNIST-sized MMVM run.

Data:

* polymnist: ``--num-samples`` tuples (default 60000, the training split) of ``--views`` (default 5) uint8
  (3, 28, 28) images, stored uint8 and scaled to [0, 1] floats when batched, as ``load_polymnist`` gives them: the
  cached training split when ``pyromm.data.polymnist_cache_dir`` holds it, else random uint8 arrays of that shape
  (the pipeline's cost does not depend on the pixel values);
* digits: the embedded 3-view digits (float (1, 8, 8), 1438 training samples), pyromm's default dataset.

Delivered: what ``Trainer.fit`` does to feed its steps, timed alone: ``resident(data, device,
Trainer.resident_fraction)`` once (untimed), then ``batch_to(batch, device)`` for each batch of
``data.batches(B, shuffle=True, drop_last=True)``, for ``--batches`` batches (a new epoch when one runs out). On
CUDA a second row keeps the data in host memory and copies each batch over (pinned, non-blocking), the trainer's
path for a dataset too large for the device.

Consumed: B / the median time of a training step (``zero_grad; loss; backward; Adam step``) of the model
``pyromm train`` builds for the data: MMVM ('jensen' rate), Laplace(0.75), PolyMNIST conv networks and latent
``--latent-dim`` for polymnist, RunConfig's defaults (MLP 256-256, latent 16) for the digits; on one fixed
batch, ``--steps`` steps after ``--warmup``. ratio = delivered / consumed: ≫ 1 means the pipeline is not the
bottleneck (1 / ratio is the share of a training loop spent drawing batches).

Times are process CPU time on a CPU (with one thread, the work's own compute) and wall time after a sync on
CUDA. Memory: this process's peak RSS (``ru_maxrss``) after the imports, after building the PolyMNIST data and
after its training steps (dataset + model + Adam state + one step's activations: the peak of a PolyMNIST run);
on CUDA also ``torch.cuda.max_memory_allocated`` over the steps.

    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py --threads 1 [--num-samples 60000] [--views 5]
        [--batches 200] [--steps 10] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pyro
import torch

from common import add_run_options, clock, flush_denormals, machine, max_rss_bytes, timed  # benchmarks/common.py, next to this script
from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset, cache_root, load_digits_multiview, load_polymnist
from pyromm.data.polymnist import polymnist_cache_dir
from pyromm.run import build_model, build_objective
from pyromm.train import Trainer
from pyromm.train.placement import batch_to, dataset_nbytes, resident

IMAGE_SHAPE = (3, 28, 28)
MIB = 2**20


def polymnist(args) -> tuple[MultimodalDataset, str]:
    """The cached PolyMNIST training split (first ``--num-samples``), else random uint8 images of its shape."""
    cache = polymnist_cache_dir(cache_root(), args.views)
    if (cache / "train_m0.npy").exists():
        data = load_polymnist(None, "train", args.views, limit=args.num_samples, cache_dir=cache_root())
        return data, "PolyMNIST training split (cached)"
    g = torch.Generator().manual_seed(0)
    views = {f"m{i}": torch.randint(0, 256, (args.num_samples, *IMAGE_SHAPE), generator=g, dtype=torch.uint8)
             for i in range(args.views)}
    return MultimodalDataset(views), "synthetic uint8 of PolyMNIST's shape"


def delivered(data: MultimodalDataset, args) -> float:
    """Samples per second the trainer's batching of ``data`` (wherever it lies) delivers to ``args.device``."""
    generator = torch.Generator().manual_seed(0)

    def run():
        done = 0
        while done < args.batches:
            for batch in data.batches(args.batch_size, shuffle=True, generator=generator, drop_last=True):
                batch_to(batch, args.device)
                done += 1
                if done == args.batches:
                    return

    cpu, wall = timed(run, args.device)
    return args.batches * args.batch_size / (wall if clock(args.device) == "wall" else cpu)


def consumed(cfg: RunConfig, data: MultimodalDataset, args) -> float:
    """Samples per second the training step of ``cfg``'s model consumes (median over ``--steps`` steps)."""
    model = build_model(cfg, data.event_shapes).to(args.device)
    objective = build_objective(cfg)
    batch = batch_to(data.batch(slice(0, args.batch_size)), args.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    hyper = {"beta": cfg.beta}

    def step():
        opt.zero_grad(set_to_none=True)
        objective(model, batch, hyper).loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = [timed(step, args.device) for _ in range(args.steps)]
    seconds = statistics.median(wall if clock(args.device) == "wall" else cpu for cpu, wall in times)
    return args.batch_size / seconds


def rows_for(name: str, data: MultimodalDataset, source: str, cfg: RunConfig, args) -> list[dict]:
    """One row per placement: where the trainer puts the data (on the device when it fits), and on CUDA also host
    memory with per-batch copies. The step runs with the placed data alive, as in a run."""
    placed = resident(data, args.device, Trainer.resident_fraction)
    consumption = consumed(cfg, placed, args)
    placements = [("resident", placed)] + ([("host, copied per batch", data)] if args.device.type == "cuda" else [])
    rows = []
    for placement, held in placements:
        delivery = delivered(held, args)
        rows.append({
            "dataset": name, "source": source, "samples": len(data), "dataset_mib": dataset_nbytes(data) / MIB,
            "placement": placement, "model": f"mmvm {cfg.network}", "delivered_per_s": delivery,
            "consumed_per_s": consumption, "ratio": delivery / consumption,
        })
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=60000, help="PolyMNIST tuples (60000: the training split)")
    p.add_argument("--views", type=int, default=5, help="PolyMNIST modalities")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=64, help="the PolyMNIST model's latent size")
    p.add_argument("--batches", type=int, default=200, help="batches drawn to time the pipeline")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    add_run_options(p)
    args = p.parse_args(argv)
    if args.num_samples < args.batch_size:
        p.error("--num-samples must be >= --batch-size")
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # as the trainer trains
    flushing = flush_denormals(p, args)
    memory = {"rss_after_imports_mib": max_rss_bytes() / MIB}
    data, source = polymnist(args)
    memory["rss_after_data_mib"] = max_rss_bytes() / MIB
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    cfg = RunConfig(dataset="polymnist", num_views=args.views, model="mmvm", network="conv", latent_dim=args.latent_dim,
                    batch_size=args.batch_size, likelihood="laplace", likelihood_scale=0.75)
    rows = rows_for("polymnist", data, source, cfg, args)
    memory["rss_after_steps_mib"] = max_rss_bytes() / MIB
    memory["dataset_mib"] = dataset_nbytes(data) / MIB
    if args.device.type == "cuda":
        memory["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(args.device) / MIB
    del data
    digits = load_digits_multiview("train", 3, seed=0)
    rows += rows_for("digits", digits, "embedded digits", RunConfig(batch_size=args.batch_size), args)

    env = {**machine(args.device), "flush_denormal": flushing}
    settings = {k: str(v) if isinstance(v, torch.device) else v for k, v in vars(args).items()}
    print(json.dumps(env))
    print(f"samples per second ({clock(args.device)} time), batch {args.batch_size}; ratio = delivered / consumed")
    header = ("dataset", "placement", "samples", "MiB", "model", "delivered/s", "consumed/s", "ratio")
    print(f"{header[0]:<11}{header[1]:<24}" + "".join(f"{h:>12}" for h in header[2:]))
    for r in rows:
        print(f"{r['dataset']:<11}{r['placement']:<24}{r['samples']:>12}{r['dataset_mib']:>12.1f}{r['model']:>12}"
              f"{r['delivered_per_s']:>12.0f}{r['consumed_per_s']:>12.0f}{r['ratio']:>12.1f}")
    print(f"polymnist data: {rows[0]['source']}")
    print("peak memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    if args.json:
        results = {"env": env, "settings": settings, "rows": rows, "memory": memory}
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
