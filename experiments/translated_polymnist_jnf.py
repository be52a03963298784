"""JNF and JNF-Shared against MoPoE, MMVAE and MMVAE+ on Translated PolyMNIST (JNF paper, Table D.3 / 4).

    python experiments/translated_polymnist_jnf.py --quick      # CPU: 3 views, 3,000 pairs, 4 epochs, ~10 CPU-min
    python experiments/translated_polymnist_jnf.py --paper --device cuda

Reference conditional coherence (one modality to another): JNF 0.17-0.18, JNF-Shared (contrastive projectors)
0.20-0.23, MoPoE, MMVAE and MMVAE+ 0.10 (random digit association). --quick is far too small to reproduce it;
it runs every model through the same path and reports.

--paper (JNF paper, App. E.3): 5 views, ResNet networks, latent 200 (MMVAE 100 with
K = 10; MMVAE+ 32 shared + 32 private with K = 10), Adam 1e-3, batch 128, β ∈ {0.5, 1, 2.5} (MMVAE's objective
ignores β: one run); JNF and JNF-Shared with 3 MADE blocks, plus 2 blocks at β = 0.5 (the table's rows). The
paper trains "until convergence"; here 10% of the training split is held out and each stage keeps its epoch of
best validation loss: JNF 400 joint + 200 flow epochs, JNF-Shared 100 contrastive projector epochs (embedding
10, τ = 0.1; MLP projectors, where the paper uses the encoder architecture) + 200 + 200, the others 300 epochs.

After training, every run's model is reloaded and the time of drawing z ~ q(z | X_S) for every subset
1 < |S| < M (JNF: batched HMC; the mixture models: their closed-form aggregation) is measured on --timing-samples
test samples: ``subset_seconds_per_sample_<k>``, seconds per sample and subset of size k.
Writes results.csv/json (one row per run) and a run directory per run (checkpoints, evaluation.json, plots).
"""
from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path
from typing import Any

from torch import nn

from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.run import load_data, load_run
from pyromm.sweep import (
    describe_references,
    experiment_config,
    experiment_parser,
    paper_references,
    run_grid,
    write_table,
)

QUICK = dict(network="conv", num_views=3, latent_dim=32, epochs=4, batch_size=128, lr=1e-3, train_limit=3000,
             test_limit=500, classifier_train_limit=20000, classifier_epochs=3, eval_num_train=3000)
PAPER = dict(network="resnet", num_views=5, latent_dim=200, batch_size=128, lr=1e-3, val_fraction=0.1,
             restore_best=True, classifier_epochs=10, checkpoint_every=5)
SHARED = dict(projector_objective="infonce", projection_dim=10, temperature=0.1)
QUICK_MODELS = {
    "mopoe_reference": {},
    "mmvae": dict(num_importance_samples=1),
    "mmvae_plus": dict(latent_dim=16, private_dim=16, num_importance_samples=1, estimator="elbo"),
    "jnf": {},
    "jnf_shared": SHARED,
}
PAPER_MODELS = {
    "mopoe_reference": dict(epochs=300),
    "mmvae": dict(epochs=300, latent_dim=100, num_importance_samples=10),
    "mmvae_plus": dict(epochs=300, latent_dim=32, private_dim=32, num_importance_samples=10),
    "jnf": dict(epochs=600, second_stage_epochs=200),
    "jnf_shared": dict(SHARED, epochs=500, projector_epochs=100, second_stage_epochs=200),
}
QUICK_BETAS, PAPER_BETAS = [0.5], [0.5, 1.0, 2.5]
BETA_FREE = {"mmvae"}
STAGE_FIELDS = ("epochs", "second_stage_epochs", "projector_epochs")
FLOW_MODELS = {"jnf", "jnf_shared"}
PAPER_REFERENCES = {m: "multivae" for m in QUICK_MODELS}
REFERENCE = {"mopoe_reference": "0.10", "mmvae": "0.10", "mmvae_plus": "0.10", "jnf": "0.17-0.18",
             "jnf_shared": "0.20-0.23"}


def grid(models: list[str], betas: list[float], paper: bool) -> list[tuple[str, float, int | None]]:
    """(model, β, MADE blocks or None) of every run: β-free models once (β = 1); flow models with 2 blocks
    (--quick), or 3 blocks at every β plus 2 blocks at β = 0.5 (--paper, Table D.3's rows)."""
    runs = []
    for model in models:
        for beta in [1.0] if model in BETA_FREE else betas:
            if model not in FLOW_MODELS:
                blocks = [None]
            elif paper:
                blocks = [3, 2] if beta == 0.5 else [3]
            else:
                blocks = [2]
            runs += [(model, beta, b) for b in blocks]
    return runs


def run_name(model: str, beta: float, blocks: int | None, seed: int) -> str:
    return f"{model}_beta{beta:g}{'' if blocks is None else f'_flows{blocks}'}_seed{seed}"


def subset_sampling_seconds(model: nn.Module, test: MultimodalDataset, batch_size: int = 256) -> dict[str, float]:
    """Per subset size k in 2..M−1: wall-clock seconds per sample and subset of drawing z ~ ``model.infer(X_S, S)``
    over ``test``, averaged over the subsets S of size k."""
    names = list(model.modality_names)
    seconds = {}
    with evaluating(model):
        for k in range(2, len(names)):
            subsets = list(combinations(names, k))
            start = time.perf_counter()
            for subset in subsets:
                for batch in test.batches(batch_size):
                    model.infer(batch, list(subset)).sample().cpu()
            seconds[str(k)] = (time.perf_counter() - start) / (len(subsets) * len(test))
    return seconds


def timed_row(row: dict[str, Any], cfg: RunConfig, run_dir: Path, num_samples: int) -> dict[str, Any]:
    """``row`` with the run's MADE blocks, the paper's conditional coherence and its model's subset-sampling time."""
    _, model = load_run(run_dir)
    _, test = load_data(cfg.replace(test_limit=num_samples))
    seconds = subset_sampling_seconds(model.to(cfg.device), test.to(cfg.device))
    return {**row, "flow_blocks": cfg.flow_blocks if cfg.model in FLOW_MODELS else None,
            "reference_conditional_coherence": REFERENCE[cfg.model],
            **{f"subset_seconds_per_sample_{k}": v for k, v in seconds.items()}}


def main(argv=None) -> None:
    p = experiment_parser(__doc__.splitlines()[0], "results/translated_polymnist_jnf")
    p.add_argument("--models", nargs="+", default=list(QUICK_MODELS), choices=list(QUICK_MODELS))
    p.add_argument("--betas", type=float, nargs="+", help="override the β grid")
    p.add_argument("--timing-samples", type=int, default=256, help="test samples timed per subset (default 256)")
    p.add_argument("--dry-run", action="store_true", help="print the run names and exit")
    args = p.parse_args(argv)
    base = experiment_config(args, QUICK, PAPER, dataset="translated_polymnist")
    settings = PAPER_MODELS if args.paper else QUICK_MODELS
    betas = args.betas or (PAPER_BETAS if args.paper else QUICK_BETAS)
    modes = paper_references(args, PAPER_REFERENCES)
    configs = {}
    for model, beta, blocks in grid(args.models, betas, args.paper):
        overrides = dict(settings[model], reference=modes.get(model))
        if args.epochs:  # N epochs for every model, JNF's split into stages by RunConfig's defaults
            overrides = {k: v for k, v in overrides.items() if k not in STAGE_FIELDS} | {"epochs": args.epochs}
        configs[run_name(model, beta, blocks, args.seed)] = base.replace(
            model=model, beta=beta, **overrides, **({} if blocks is None else {"flow_blocks": blocks})
        )
    print(describe_references(args.models, modes))
    if args.dry_run:
        print("\n".join(configs))
        return
    out = Path(args.out)
    rows = run_grid(configs, out, progress=not args.no_progress)
    rows = [timed_row(row, configs[row["run"]], out / row["run"], args.timing_samples) for row in rows]
    write_table(rows, out)
    _print_table(rows, base.num_views)
    print(f"results: {out}/results.csv")


def _print_table(rows: list[dict[str, Any]], num_views: int) -> None:
    sizes = range(2, num_views)
    print(f"{'run':<34}{'cond.':>7}{'paper':>11}{'joint':>7}{'latent':>8}"
          + "".join(f"{f'{k} in':>7}" for k in range(1, num_views)) + "".join(f"{f's/x |S|={k}':>12}" for k in sizes))
    for r in rows:
        joint = "" if r["joint_coherence"] is None else f"{r['joint_coherence']:.3f}"
        inputs = "".join(f"{r.get(f'coherence_{k}_inputs') or 0:>7.3f}" for k in range(1, num_views))
        timing = "".join(f"{r[f'subset_seconds_per_sample_{k}']:>12.2e}" for k in sizes)
        print(f"{r['run']:<34}{r['coherence']:>7.3f}{r['reference_conditional_coherence']:>11}{joint:>7}"
              f"{r['latent_acc']:>8.3f}{inputs}{timing}")


if __name__ == "__main__":
    main()
