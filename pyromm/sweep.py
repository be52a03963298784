"""Grids of runs (models × β × settings): one run directory each, a results table and trade-off plots.

Runs go one at a time in this process, or as jobs of an executor (``pyromm.executors``: a local process pool,
or SLURM through submitit). Every run writes config.json and evaluation.json into its own directory, and
:func:`collect` rebuilds the table and plots from those, whoever ran them.
"""
from __future__ import annotations

import argparse
import csv
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from pyromm.config import RunConfig
from pyromm.evaluation import plot_tradeoff
from pyromm.executors import LAUNCHERS, open_executor
from pyromm.run import classifier_cache, coherence_classifiers, run

TRADEOFFS = (("latent_acc", "latent"), ("coherence", "coherence"))
TRADEOFF_TITLES = {
    "latent_acc": "Latent accuracy against reconstruction error",
    "coherence": "Coherence against reconstruction error",
}


def experiment_parser(description: str, default_out: str, *, launch: bool = False) -> argparse.ArgumentParser:
    """The options every experiment script shares: --quick (default) or --paper, --epochs, --seed, --device,
    --data-root, --out and --no-progress; with ``launch`` (scripts that run grids through
    :func:`experiment_executor`) also --workers, --launcher, --threads, --slurm-partition and --slurm-timeout-min."""
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small CPU setting (default)")
    mode.add_argument("--paper", action="store_true", help="the paper's setting (GPU)")
    parser.add_argument("--epochs", type=int, help="override the setting's number of epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--no-progress", action="store_true")
    if launch:
        parser.add_argument("--workers", type=int, default=1, help="runs at once in a local process pool (default: 1, here)")
        parser.add_argument("--launcher", choices=LAUNCHERS, default="local", help="local processes, or SLURM jobs via submitit")
        parser.add_argument("--threads", type=int, help="torch CPU threads per run (default: the CPUs / --workers)")
        parser.add_argument("--slurm-partition", help="SLURM partition (--launcher slurm)")
        parser.add_argument("--slurm-timeout-min", type=int, default=240, help="SLURM time limit per run, minutes")
    return parser


@contextmanager
def experiment_executor(args: argparse.Namespace) -> Iterator[Any]:
    """The executor the options of ``experiment_parser(..., launch=True)`` ask for (None: runs in this process);
    SLURM jobs get ``--threads`` CPUs and one GPU when ``--device`` is CUDA."""
    slurm: dict[str, Any] = {"timeout_min": args.slurm_timeout_min, "cpus_per_task": args.threads or 1}
    if args.slurm_partition:
        slurm["slurm_partition"] = args.slurm_partition
    if args.device.startswith("cuda"):
        slurm["gpus_per_node"] = 1
    with open_executor(args.launcher, args.workers, args.out, slurm, args.threads) as executor:
        yield executor


def experiment_config(args: argparse.Namespace, quick: Mapping[str, Any], paper: Mapping[str, Any], **fixed: Any) -> RunConfig:
    """The base RunConfig of an experiment: the --quick or --paper setting, then the shared options, then ``fixed``."""
    settings = {**(paper if args.paper else quick), **fixed}
    if args.epochs:
        settings["epochs"] = args.epochs
    return RunConfig(data_root=args.data_root, device=args.device, seed=args.seed, **settings)


def paper_references(args: argparse.Namespace, modes: Mapping[str, str]) -> dict[str, str]:
    """The reference mode of each model (docs/reference_differences.md) under --paper, none under --quick."""
    return dict(modes) if args.paper else {}


def describe_references(models: Iterable[str], modes: Mapping[str, str]) -> str:
    """One line of a script's output: the reference mode each model runs in, or that all use pyromm's defaults."""
    models = list(models)
    if not any(m in modes for m in models):
        return "reference modes: none (pyromm's defaults; docs/reference_differences.md)"
    cells = ", ".join(f"{m}: {modes.get(m, 'none')}" for m in models)
    return f"reference modes (docs/reference_differences.md): {cells}"


def summarize(cfg: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """One table row: the run's model, reference mode, β, seed and η with its summary metrics."""
    by_inputs = results.get("coherence_by_num_inputs") or {}
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "reference": cfg.reference,
        "beta": cfg.beta,
        "seed": cfg.seed,
        "keep_probability": cfg.keep_probability,
        "complete_only": cfg.train_complete_only,
        "latent_acc": results["latent_acc_mean"],
        "coherence": results["coherence_cross_mean"],
        "rec_error": results["rec_nll"],
        "rec_mse": results["rec_mse"],
        "joint_coherence": results.get("joint_coherence"),
        "num_classes": results.get("num_classes"),
        **{f"coherence_{k}_inputs": v for k, v in by_inputs.get("by_num_inputs", {}).items()},
        **{f"latent_acc/{m}": acc for m, acc in results["latent"].items()},
        **{f"classifier_acc/{m}": acc for m, acc in results["classifier_accuracy"].items()},
    }


def finished_results(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any] | None:
    """The evaluation in ``run_dir/evaluation.json`` when it was written for ``cfg``, else None."""
    path = Path(run_dir) / "evaluation.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("config") == cfg.to_dict() else None


def run_job(
    name: str, cfg: RunConfig, run_dir: str | Path, *, progress: bool = False, resume: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """One grid run: train and evaluate ``cfg`` in ``run_dir`` (with ``resume``, a run already evaluated for this
    config is read back, not retrained) and return its table row. ``threads`` sets torch's CPU threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    results = finished_results(cfg, run_dir) if resume else None
    if results is None:
        results = run(cfg, run_dir, progress=progress, resume=resume)
    return {"run": name, **summarize(cfg, results)}


def run_grid(
    configs: Mapping[str, RunConfig],
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    executor: Any = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every named config in ``out_dir/<name>``; rewrite results.csv/json after each run.

    ``executor`` (anything with ``submit(fn, *args, **kwargs) -> handle.result()``: a process pool, a submitit
    executor) runs them as separate jobs, without progress bars; None runs them here, one after another.
    ``threads``: torch CPU threads per job.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if executor is None:
        for name, cfg in configs.items():
            rows.append(run_job(name, cfg, out_dir / name, progress=progress, resume=resume, threads=threads))
            write_table(rows, out_dir)
        return rows
    prepare_classifiers(configs.values())
    jobs = [
        executor.submit(run_job, name, cfg, out_dir / name, progress=False, resume=resume, threads=threads)
        for name, cfg in configs.items()
    ]
    for job in jobs:
        rows.append(job.result())
        write_table(rows, out_dir)
    return rows


def prepare_classifiers(configs: Iterable[RunConfig]) -> None:
    """Train (or load) each distinct set of coherence classifiers the configs need, once, in this process, so
    that concurrent jobs find them in the cache instead of each training its own copy."""
    done = set()
    for cfg in configs:
        key = classifier_cache(cfg)[1]
        if key not in done:
            coherence_classifiers(cfg)
            done.add(key)


def beta_sweep(
    base: RunConfig,
    models: Sequence[str],
    betas: Sequence[float],
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    executor: Any = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Every model at every β (``overrides[model]`` adjusts a model's config), then the trade-off plots;
    ``executor`` and ``threads`` as in :func:`run_grid`."""
    overrides = overrides or {}
    configs = {
        f"{model}_beta{beta:g}_seed{base.seed}": base.replace(model=model, beta=float(beta), **overrides.get(model, {}))
        for model in models
        for beta in betas
    }
    rows = run_grid(configs, out_dir, progress=progress, resume=resume, executor=executor, threads=threads)
    plot_tradeoffs(rows, Path(out_dir))
    return rows


def collect(results_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of every run directory ``results_dir/<name>`` holding an evaluation.json (sorted by name),
    written to results.csv/json with the trade-off plots."""
    results_dir = Path(results_dir)
    rows = []
    for path in sorted(results_dir.glob("*/evaluation.json")):
        results = json.loads(path.read_text())
        rows.append({"run": path.parent.name, **summarize(RunConfig.from_dict(results["config"]), results)})
    if not rows:
        raise FileNotFoundError(f"no run directory with an evaluation.json in {results_dir}")
    write_table(rows, results_dir)
    plot_tradeoffs(rows, results_dir)
    return rows


def plot_tradeoffs(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """tradeoff_latent.png and tradeoff_coherence.png: each against the reconstruction error, one line per model,
    titled with the dataset(s) and with the chance line 1/K when every row has the same number of classes K."""
    datasets = sorted({str(row["dataset"]) for row in rows if row.get("dataset") is not None})
    counts = {row.get("num_classes") for row in rows}
    num_classes = counts.pop() if len(counts) == 1 else None
    for y, name in TRADEOFFS:
        on = ", ".join(datasets) or "dataset not recorded"
        title = f"{TRADEOFF_TITLES[y]}: {on}\none line per method, one point per β"
        plot_tradeoff(rows, out_dir / f"tradeoff_{name}.png", x="rec_error", y=y, hue="model", label="beta",
                      num_classes=num_classes, title=title)


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """results.json and results.csv (columns: the union of the rows' keys, in first-seen order)."""
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
