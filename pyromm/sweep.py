"""Grids of runs (models × β × settings): one run directory each, a results table and trade-off plots."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyromm.config import RunConfig
from pyromm.evaluation import plot_tradeoff
from pyromm.run import run

TRADEOFFS = (("latent_acc", "latent"), ("coherence", "coherence"))


def experiment_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The options every experiment script shares: --quick (default) or --paper, --epochs, --seed, --device,
    --data-root, --out and --no-progress."""
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
    return parser


def experiment_config(args: argparse.Namespace, quick: Mapping[str, Any], paper: Mapping[str, Any], **fixed: Any) -> RunConfig:
    """The base RunConfig of an experiment: the --quick or --paper setting, then the shared options, then ``fixed``."""
    settings = {**(paper if args.paper else quick), **fixed}
    if args.epochs:
        settings["epochs"] = args.epochs
    return RunConfig(data_root=args.data_root, device=args.device, seed=args.seed, **settings)


def summarize(cfg: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """One table row: the run's model, β, seed and η with its summary metrics."""
    by_inputs = results.get("coherence_by_num_inputs") or {}
    return {
        "model": cfg.model,
        "beta": cfg.beta,
        "seed": cfg.seed,
        "keep_probability": cfg.keep_probability,
        "complete_only": cfg.train_complete_only,
        "latent_acc": results["latent_acc_mean"],
        "coherence": results["coherence_cross_mean"],
        "rec_error": results["rec_nll"],
        "rec_mse": results["rec_mse"],
        "joint_coherence": results.get("joint_coherence"),
        **{f"coherence_{k}_inputs": v for k, v in by_inputs.get("by_num_inputs", {}).items()},
        **{f"latent_acc/{m}": acc for m, acc in results["latent"].items()},
        **{f"classifier_acc/{m}": acc for m, acc in results["classifier_accuracy"].items()},
    }


def run_grid(
    configs: Mapping[str, RunConfig], out_dir: str | Path, *, progress: bool = True, resume: bool = True
) -> list[dict[str, Any]]:
    """Train and evaluate every named config in ``out_dir/<name>``; rewrite results.csv/json after each run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cfg in configs.items():
        rows.append({"run": name, **summarize(cfg, run(cfg, out_dir / name, progress=progress, resume=resume))})
        write_table(rows, out_dir)
    return rows


def beta_sweep(
    base: RunConfig,
    models: Sequence[str],
    betas: Sequence[float],
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every model at every β (``overrides[model]`` adjusts a model's config), then the trade-off plots."""
    overrides = overrides or {}
    configs = {
        f"{model}_beta{beta:g}_seed{base.seed}": base.replace(model=model, beta=float(beta), **overrides.get(model, {}))
        for model in models
        for beta in betas
    }
    rows = run_grid(configs, out_dir, progress=progress, resume=resume)
    for y, name in TRADEOFFS:
        plot_tradeoff(rows, Path(out_dir) / f"tradeoff_{name}.png", x="rec_error", y=y, hue="model", label="beta")
    return rows


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """results.json and results.csv (columns: the union of the rows' keys, in first-seen order)."""
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
