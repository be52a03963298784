"""Grids of runs (models × β × settings): one run directory each, a results table and trade-off plots.

Runs go one at a time in this process, or as jobs of an executor (``pyromm.executors``: a local process pool,
or SLURM through submitit). Every run writes config.json and evaluation.json into its own directory, and
:func:`collect` rebuilds the table and plots from those, whoever ran them.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import torch

from pyromm.config import ConfigError, RunConfig
from pyromm.evaluation import plot_tradeoff
from pyromm.executors import LAUNCHERS, open_executor
from pyromm.files import remove_orphans, write_json, write_text
from pyromm.lock import RunLock, locked_by
from pyromm.provenance import EVALUATION_FILE, evaluation_problem
from pyromm.run import classifier_cache, coherence_classifiers, run
from pyromm.saved_runs import not_evaluated_reason

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
    """The evaluation in ``run_dir/evaluation.json`` when it was written for ``cfg`` from the run's newest
    checkpoint, else None; an unreadable or stale one gives a warning naming the file and why."""
    path = Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        warnings.warn(f"{path} cannot be read ({type(err).__name__}: {err}); evaluating the run again", stacklevel=2)
        return None
    if not isinstance(results, dict) or results.get("config") != cfg.to_dict():
        return None
    problem = evaluation_problem(run_dir, results)
    if problem is not None:
        warnings.warn(f"{path} is stale: {problem}; evaluating the run again", stacklevel=2)
        return None
    return results


def run_job(
    name: str, cfg: RunConfig, run_dir: str | Path, *, progress: bool = False, resume: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """One grid run: train and evaluate ``cfg`` in ``run_dir`` (with ``resume``, a run already evaluated for this
    config from its newest checkpoint is read back, not retrained) and return its table row. ``threads`` sets
    torch's CPU threads. The run directory is locked throughout (a run another process is writing fails at once:
    ``pyromm.lock.RunLockedError``) and cleared of the temporary files of interrupted writes."""
    if threads is not None:
        torch.set_num_threads(threads)
    with RunLock(run_dir):
        remove_orphans(run_dir)
        remove_orphans(Path(run_dir) / "checkpoints")
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


class Collected(NamedTuple):
    """The table rows of the evaluated runs, and the directories skipped with the reason for each."""

    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]]


def collect(results_dir: str | Path) -> Collected:
    """The rows of every run directory ``results_dir/<name>`` with a current evaluation.json (sorted by name),
    written to results.csv/json with the trade-off plots.

    Skipped, each with its reason: directories another process holds locked (training or evaluating), with no
    evaluation.json, or with one that is unreadable or stale (``pyromm.provenance``: it scored an older
    checkpoint than the run's newest, or another identity). Raises ``FileNotFoundError`` listing them when no
    run is left.
    """
    results_dir = Path(results_dir)
    rows, skipped = [], []
    for run_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        row, why = _collect_one(run_dir)
        if row is None:
            skipped.append((run_dir.name, why))
        else:
            rows.append(row)
    if not rows:
        reasons = "".join(f"; {name}: {why}" for name, why in skipped)
        raise FileNotFoundError(f"no run directory with an evaluation.json to use in {results_dir}{reasons}")
    write_table(rows, results_dir)
    plot_tradeoffs(rows, results_dir)
    return Collected(rows, skipped)


def _collect_one(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(table row, "") of one run directory, or (None, why it is skipped)."""
    holder = locked_by(run_dir)
    if holder is not None:
        return None, f"in use by {holder}"
    path = run_dir / EVALUATION_FILE
    if not path.is_file():
        has_config = (run_dir / "config.json").is_file()
        return None, not_evaluated_reason(run_dir) if has_config else "not a run directory (no config.json)"
    try:
        results = json.loads(path.read_text())
        row = {"run": run_dir.name, **summarize(RunConfig.from_dict(results["config"]), results)}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ConfigError) as err:
        return None, f"{path} is unreadable ({type(err).__name__}: {err}); evaluate the run again"
    problem = evaluation_problem(run_dir, results)
    if problem is not None:
        return None, f"{path} is stale: {problem}; evaluate the run again (pyromm evaluate {run_dir})"
    return row, ""


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
    """results.json and results.csv (columns: the union of the rows' keys, in first-seen order), written
    atomically."""
    write_json(out_dir / "results.json", rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / "results.csv", table.getvalue())
