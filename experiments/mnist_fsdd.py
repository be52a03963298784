"""MNIST + spoken digits: MMVM, MoPoE, MVTCAE, MMVAE+ and JNF on coherence image→sound, sound→image and latent accuracy.

    python experiments/mnist_fsdd.py --quick                          # 2-core CPU, about 5-10 minutes
    python experiments/mnist_fsdd.py --paper --device cuda
    python experiments/mnist_fsdd.py --quick --sound-missing-max 0.8  # training sounds missing not at random

Each MNIST image is paired with an FSDD recording of its digit (log-mel spectrogram, 1 x 32 x 128); the test
recordings come from a speaker never heard in training (pyromm.data.mnist_fsdd). Images use the MLP (quick) or
conv (paper) networks, sounds the spectrogram conv nets, both a Normal(σ = 0.1) likelihood. Coherence is judged by a
digit classifier per modality (image: CNN, sound: SpectrogramClassifier) trained on the training split.
With --sound-missing-max p the training sound of digit y is missing with probability p·y/9; JNF, whose joint
encoder needs both modalities, then trains on the complete samples only.

Writes results.csv/json (one row per model), scores.png (both coherences and the latent accuracy per model)
and a run directory per model with its checkpoints, evaluation.json and plots.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pyromm.evaluation import save_figure
from pyromm.run import run
from pyromm.sweep import describe_references, experiment_config, experiment_parser, summarize, write_table

# Measured on a 2-core CPU shared with other jobs (one torch thread, cold caches): 9 min wall, 3.7 min of CPU time,
# spectrograms and classifiers included; MoPoE leads both coherences after these 5 epochs.
QUICK = dict(network="mlp", latent_dim=32, epochs=5, batch_size=128, lr=1e-3, likelihood="normal", likelihood_scale=0.1,
             train_limit=6000, test_limit=1000, classifier_train_limit=15000, classifier_epochs=2, eval_num_train=6000)
PAPER = dict(network="conv", latent_dim=64, epochs=100, batch_size=128, lr=1e-3, likelihood="normal", likelihood_scale=0.1,
             classifier_epochs=10, checkpoint_every=5)
MODELS = {
    "mmvm": {},
    "mopoe_reference": {},
    "mvtcae": dict(alpha=5 / 6),
    "mmvae_plus": dict(num_importance_samples=1, estimator="elbo"),
    "jnf": {},
}
NEEDS_COMPLETE = {"jnf"}
SCORES = (("coherence_image_to_sound", "coherence image→sound"), ("coherence_sound_to_image", "coherence sound→image"),
          ("latent_acc", "latent accuracy"))


def row(name: str, cfg, results: dict[str, Any]) -> dict[str, Any]:
    """The sweep's summary of one run plus both cross-modal coherences."""
    pair = results["coherence"]["pair"]
    return {"run": name, **summarize(cfg, results), "sound_missing_max": cfg.sound_missing_max,
            "coherence_image_to_sound": pair["image->sound"], "coherence_sound_to_image": pair["sound->image"]}


def plot_scores(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: per model, the coherence in both directions and the mean latent accuracy."""
    fig = Figure(figsize=(1.6 + 1.4 * len(rows), 4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(SCORES)
    for k, (key, label) in enumerate(SCORES):
        xs = [i + (k - (len(SCORES) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r[key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
    ax.set_ylim(0, 1)
    ax.axhline(0.1, color="grey", linestyle="--", linewidth=1, label="chance (1/10 digits = 0.10)")
    ax.set_xlabel("method")
    ax.set_ylabel("accuracy: share of test samples given\nthe right digit (higher is better)")
    ax.set_title("MNIST-FSDD: cross-modal coherence and latent accuracy per method", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv=None) -> None:
    p = experiment_parser(__doc__.splitlines()[0], "results/mnist_fsdd")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--sound-missing-max", type=float, default=0.0,
                   help="training sound of digit y missing with probability p·y/9 (default: %(default)s, complete)")
    p.add_argument("--dry-run", action="store_true", help="print the run names and exit")
    args = p.parse_args(argv)
    base = experiment_config(args, QUICK, PAPER, dataset="mnist_fsdd", sound_missing_max=args.sound_missing_max)
    configs = {
        f"{m}_seed{args.seed}": base.replace(
            model=m, train_complete_only=m in NEEDS_COMPLETE and args.sound_missing_max > 0, **MODELS[m]
        )
        for m in args.models
    }
    print(describe_references(args.models, {}))  # no published table to reproduce: pyromm's defaults
    if args.dry_run:
        print("\n".join(configs))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for name, cfg in configs.items():
        rows.append(row(name, cfg, run(cfg, out / name, progress=not args.no_progress)))
        write_table(rows, out)
    plot_scores(rows, out / "scores.png")
    print(f"{'model':<18}{'coh image→sound':>17}{'coh sound→image':>17}{'latent acc':>12}{'image':>8}{'sound':>8}")
    for r in rows:
        print(f"{r['model']:<18}{r['coherence_image_to_sound']:>17.3f}{r['coherence_sound_to_image']:>17.3f}"
              f"{r['latent_acc']:>12.3f}{r['latent_acc/image']:>8.3f}{r['latent_acc/sound']:>8.3f}")
    print(f"classifier accuracy (test): image {rows[0]['classifier_acc/image']:.3f}  sound {rows[0]['classifier_acc/sound']:.3f}")
    print(f"results: {out / 'results.csv'}, {out / 'scores.png'}  (wall time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
