"""β sweeps over models: one run per (model, β), a results table and the trade-off plots (MMVM Fig. 2)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from pyromm.config import RunConfig
from pyromm.evaluation import plot_tradeoff
from pyromm.run import run

TRADEOFFS = (("latent_acc", "latent"), ("coherence", "coherence"))


def summarize(cfg: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """One table row: the run's model and β with its summary metrics."""
    return {
        "model": cfg.model,
        "beta": cfg.beta,
        "seed": cfg.seed,
        "latent_acc": results["latent_acc_mean"],
        "coherence": results["coherence_cross_mean"],
        "rec_error": results["rec_nll"],
        "rec_mse": results["rec_mse"],
        **{f"latent_acc/{m}": acc for m, acc in results["latent"].items()},
        **{f"classifier_acc/{m}": acc for m, acc in results["classifier_accuracy"].items()},
    }


def beta_sweep(
    base: RunConfig,
    models: Sequence[str],
    betas: Sequence[float],
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Train and evaluate ``base`` for every model and β; write results.csv/json and trade-off plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in models:
        for beta in betas:
            cfg = base.replace(model=model, beta=float(beta))
            run_dir = out_dir / f"{model}_beta{beta:g}_seed{cfg.seed}"
            rows.append(summarize(cfg, run(cfg, run_dir, progress=progress, resume=resume)))
            write_table(rows, out_dir)
    for y, name in TRADEOFFS:
        plot_tradeoff(rows, out_dir / f"tradeoff_{name}.png", x="rec_error", y=y, hue="model", label="beta")
    return rows


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """results.json and results.csv (columns: the union of the rows' keys, in first-seen order)."""
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
