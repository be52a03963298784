"""Rats hippocampal spike data, five rats as five modalities (MMVM paper §5.2, Fig. 3 and Fig. 4).

    python experiments/rats.py --quick                          # 2-core CPU, minutes
    python experiments/rats.py --paper --all-methods --device cuda
    python experiments/rats.py --dry-run                        # the run names, no data needed

Needs the Dryad files (doi:10.7280/D14X30) under <data root>/rats/ (see `pyromm data prepare rats`); when
they are missing the script says so and stops. Settings of the MMVM rats code:
2-D latents; networks d→d→d→D and D→d→d→d with LeakyReLU (network 'spike_mlp'); its summed squared error
as a Normal likelihood with σ² = 1/2 (−log p = Σ (x − μ)² + const); Adam 1e-3, batch 128, 999 epochs; α = 0
for MMVM; the joint baselines' rate is β·M·KL. Split: pyromm.data.rats (20% of the paired trials per odour
held out, seed 0); the reference code has none.

Writes, besides one run directory per (model, β): results.csv/json; Fig. 3 as tradeoff_latent.png and
tradeoff_coherence.png (latent accuracy and coherence against reconstruction error, one point per β);
Fig. 4 as fig4_latents.png (per model at its β of best latent accuracy, the 2-D test-set encoder means of
every rat coloured by odour).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

from pyromm.data.rats import RATS, rat_files
from pyromm.evaluation import encoder_means, save_figure
from pyromm.run import load_data, load_run
from pyromm.sweep import beta_sweep, describe_references, experiment_config, experiment_parser

COMMON = dict(
    dataset="rats", num_views=len(RATS), network="spike_mlp", latent_dim=2, likelihood="normal",
    likelihood_scale=math.sqrt(0.5), batch_size=128, lr=1e-3,
)
QUICK = dict(epochs=20, classifier_epochs=10)
PAPER = dict(epochs=999, classifier_epochs=51, checkpoint_every=50)
QUICK_BETAS = [1e-4, 1e-2]
PAPER_BETAS = [1e-5, 1e-4, 1e-3, 2.5e-3, 5e-3, 1e-2]
ALL_METHODS = ["independent", "avg", "poe", "mopoe", "mmvm"]
ODOURS = "ABCD"


def best_runs(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, the row of the β with the highest mean unimodal latent accuracy (the paper's choice for Fig. 4)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["model"] not in best or row["latent_acc"] > best[row["model"]]["latent_acc"]:
            best[row["model"]] = row
    return best


def plot_latents_per_rat(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path:
    """Fig. 4: one row of panels per model (its best β), one panel per rat: test-set encoder means by odour."""
    best = best_runs(rows)
    fig = Figure(figsize=(2.6 * len(RATS), 2.6 * len(best)), layout="constrained")
    axes = fig.subplots(len(best), len(RATS), squeeze=False)
    for i, (model, row) in enumerate(best.items()):
        cfg, trained = load_run(out_dir / row["run"])
        means = encoder_means(trained, load_data(cfg)[1])
        for j, rat in enumerate(trained.modality_names):
            z, odour = means[rat]
            scatter = axes[i, j].scatter(z[:, 0], z[:, 1], c=odour, cmap="tab10", vmin=0, vmax=9, s=3, alpha=0.7)
            axes[i, j].set_title(f"{model} (β={row['beta']:g}): {rat}", fontsize=8)
            axes[i, j].set_xlabel("latent dimension 1", fontsize=7)
            axes[i, j].set_ylabel("latent dimension 2", fontsize=7)
            axes[i, j].tick_params(labelsize=6)
    handles, _ = scatter.legend_elements()
    fig.legend(handles, [f"odour {o}" for o in ODOURS[: len(handles)]], loc="outside lower center", ncol=len(handles))
    fig.suptitle("Rats: 2-D encoder means of the test trials per rat (one panel each), coloured by odour;\n"
                 "one row per method at its β of best latent accuracy", fontsize=10)
    return save_figure(fig, out_dir / "fig4_latents.png")


def main(argv=None) -> None:
    p = experiment_parser(__doc__.splitlines()[0], "results/rats")
    p.add_argument("--betas", type=float, nargs="+", help="override the β grid")
    p.add_argument("--models", nargs="+", default=["independent", "mmvm"], choices=ALL_METHODS)
    p.add_argument("--all-methods", action="store_true", help=f"all of {ALL_METHODS}")
    p.add_argument("--dry-run", action="store_true", help="print the run names and exit")
    args = p.parse_args(argv)
    base = experiment_config(args, QUICK, PAPER, **COMMON)
    betas = args.betas or (PAPER_BETAS if args.paper else QUICK_BETAS)
    models = ALL_METHODS if args.all_methods else args.models
    # No reference mode: the rats code differs from the PolyMNIST code that 'mmvm-code' describes (it keeps a
    # 1e-6 scale floor and has no split; docs/reference_differences.md, rows 3, 13, 14).
    print(describe_references(models, {}))
    if args.dry_run:
        for model in models:
            for beta in betas:
                print(f"{base.replace(model=model, beta=float(beta)).model}_beta{beta:g}_seed{base.seed}")
        return
    missing = [path for rat in RATS for path in rat_files(args.data_root, rat) if not path.exists()]
    if missing:
        print(f"skipping the rats experiment: {len(missing)} data files are missing, the first {missing[0]}. Get "
              "them from Dryad (doi:10.7280/D14X30); see `pyromm data prepare rats`.", file=sys.stderr)
        return
    # The MMVM code's rats runs keep α = 0 (no annealing; pyromm's default anneals it from 1 to 0).
    rows = beta_sweep(base, models, betas, args.out, progress=not args.no_progress, overrides={"mmvm": dict(alpha=0.0)})
    figure = plot_latents_per_rat(rows, Path(args.out))
    print(f"{'model':<12}{'beta':>9}{'latent acc':>12}{'coherence':>11}{'rec error':>12}")
    for r in rows:
        print(f"{r['model']:<12}{r['beta']:>9g}{r['latent_acc']:>12.3f}{r['coherence']:>11.3f}{r['rec_error']:>12.1f}")
    print(f"results: {args.out}/results.csv, Fig. 3: tradeoff_latent.png / tradeoff_coherence.png, Fig. 4: {figure}")


if __name__ == "__main__":
    main()
