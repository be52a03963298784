"""JNF toy experiment (JNF paper, §4.1 and Fig. 2): JNF and JNF-Shared with a 2-D latent on squares and circles.

    python experiments/jnf_toy.py --quick          # 2-core CPU, a few minutes
    python experiments/jnf_toy.py --paper --device cuda

The data (pyromm.data.shapes): a centred square and a centred circle of independent widths, both full or both
empty. JNF trains a joint VAE, then fits each q_m(z | x_m) = f_m^{-1}# N(μ_m(x_m), σ_m²(x_m)) to joint-posterior
draws; JNF-Shared first trains DCCA projectors g_m that its unimodal encoders read. For the comparison with a
Gaussian q_m the script also fits, on JNF's frozen joint encoder, unimodal encoders without flow (the same stage-2
objective, identity flows). The paper gives no training settings for the toy; --paper trains on all 180,000
training pairs of its 200,000.

Writes to --out:
* latent_space.png: the joint-encoder means of the test pairs, JNF and JNF-Shared (blue: full, red: empty; darker:
  larger square);
* posteriors.png: for the test pair with the largest full square, the density contours of q(z | x_square) for the
  Gaussian q, JNF's flow q and JNF-Shared's flow q over the joint means, and the circles decoded from 8 draws of each;
* toy_results.json: per trained model the full/empty accuracy of a logistic regression on the joint means and on
  the unimodal means; per posterior the mean log q_m(z | x_m) of held-out z ~ q(z | X), the full/empty coherence of
  cross generations, and the fill and widths of 500 circles generated from the example square;
* a run directory per model (checkpoints, metrics).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nflows.transforms import Permutation
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from pyromm.config import RunConfig
from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.data.shapes import is_full, shape_width
from pyromm.evaluation import coherence, distribution_mean, latent_classification, save_figure
from pyromm.evaluation.classifiers import evaluating
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.infer.stages import flow_stage_parameters
from pyromm.models.jnf import JNF
from pyromm.methods.common import build_modalities
from pyromm.methods.jnf import default_jnf_sampler, jnf_stage_epochs
from pyromm.run import train
from pyromm.sweep import describe_references, experiment_config, experiment_parser, paper_references
from pyromm.train import Stage, Trainer

COMMON = dict(dataset="shapes", network="mlp", latent_dim=2, likelihood="bernoulli", beta=1.0, lr=1e-3)
SHARED = dict(projector_objective="dcca", projection_dim=2)  # jnf_shared's projectors
QUICK = dict(COMMON, hidden=[256, 256], batch_size=128, train_limit=10000, test_limit=2000)
PAPER = dict(COMMON, hidden=[512, 512], batch_size=128, checkpoint_every=5)
# (projector, joint, flow) epochs; the paper gives none for the toy (--paper: MultiVae's default of 30 DCCA epochs,
# then long joint and flow stages). --epochs N instead splits N by RunConfig's defaults.
STAGES = {"quick": (3, 10, 5), "paper": (30, 100, 50)}
MODELS = ("jnf", "jnf_shared")
# --paper: MultiVae's JNF (docs/reference_differences.md).
PAPER_REFERENCES = {m: "multivae" for m in MODELS}
NUM_GENERATED = 500


def stage_settings(model: str, stages: tuple[int, int, int]) -> dict[str, int]:
    """The RunConfig fields giving ``model`` the (projector, joint, flow) stage epochs ``stages``."""
    projectors, joint, flows = stages
    if model == "jnf":
        return dict(epochs=joint + flows, second_stage_epochs=flows)
    return dict(epochs=projectors + joint + flows, second_stage_epochs=flows, projector_epochs=projectors)


class FillClassifier(nn.Module):
    """Logits (N, 2) of (empty, full) read off the centre of a shape image (``pyromm.data.shapes.is_full``)."""

    def forward(self, x: Tensor) -> Tensor:
        full = is_full(x)
        return torch.stack([~full, full], dim=-1).float()


def gaussian_twin(model: JNF, cfg: RunConfig) -> JNF:
    """A JNF on ``model``'s joint encoder and decoders with fresh unimodal encoders and identity flows, so that
    q_m(z | x_m) is the encoder Gaussian itself."""
    torch.manual_seed(cfg.seed)
    fresh = build_modalities(cfg, {name: m.event_shape for name, m in model.modalities.items()})
    modalities = [dataclasses.replace(m, decoder=model.decoders[m.name]) for m in fresh]
    identity = {m.name: Permutation(torch.arange(cfg.latent_dim)) for m in fresh}
    return JNF(modalities, cfg.latent_dim, model.joint_encoder, identity, default_jnf_sampler())


def fit_gaussian_twin(model: JNF, cfg: RunConfig, train_set: MultimodalDataset, progress: bool) -> JNF:
    """The Gaussian twin fitted by JNF's stage-2 objective for as many epochs as ``model``'s flows."""
    twin = gaussian_twin(model, cfg)
    flows = jnf_stage_epochs(cfg)[2]
    objective = ELBOObjective(RateELBO("analytic"), twin.flow_fit_model, twin.flow_fit_guide)
    stage = Stage("gaussian-posteriors", flows, objective, flow_stage_parameters)
    Trainer(twin, objective, lr=cfg.lr, batch_size=cfg.batch_size, stages=[stage], device=cfg.device,
            seed=cfg.seed, progress=progress).fit(train_set)
    return twin


def joint_means(model: JNF, data: MultimodalDataset, batch_size: int = 1024) -> Tensor:
    """(N, D) means of the joint posterior q(z | X) of every pair."""
    with evaluating(model):
        return torch.cat([model.joint_posterior(b).mean for b in data.batches(batch_size)]).cpu()


def joint_accuracy(model: JNF, train_set: MultimodalDataset, test: MultimodalDataset, num_train: int) -> float:
    """Test accuracy of a logistic regression of full/empty on the joint means of ``num_train`` training pairs."""
    train_part = train_set.subset(slice(0, num_train))
    probe = LogisticRegression(max_iter=1000).fit(joint_means(model, train_part).numpy(), train_part.labels.numpy())
    return float(probe.score(joint_means(model, test).numpy(), test.labels.numpy()))


def heldout_log_q(model: JNF, test: MultimodalDataset, batch_size: int = 1024) -> dict[str, float]:
    """Per modality, mean_i log q_m(z_i | x_m^i) of one held-out draw z_i ~ q(z | X^i) each."""
    totals = dict.fromkeys(model.modality_names, 0.0)
    with evaluating(model):
        for batch in test.batches(batch_size):
            z = model.joint_posterior(batch).sample()
            for name, q in model.encode(batch).items():
                totals[name] += float(q.log_prob(z).sum())
    return {name: total / len(test) for name, total in totals.items()}


def example_index(test: MultimodalDataset) -> int:
    """The test pair whose square is full and widest (the first of them)."""
    widths = shape_width(test.batch(slice(None)).data["square"]).double()
    return int(torch.where(test.labels == 1, widths, -1.0).argmax())


def generated_circles(model: JNF, example: MultimodalBatch, num: int) -> tuple[Tensor, Tensor]:
    """``num`` draws z ~ q(z | x_square) of the example and the circles E[p(x_circle | z)] decoded from them."""
    with evaluating(model):
        z = model.infer(example, ["square"]).sample(torch.Size([num]))
        return z[:, 0], distribution_mean(model.decode("circle", z)).reshape(num, 1, 32, 32)


def circle_summary(circles: Tensor) -> dict[str, float]:
    """The fraction of full circles and the mean and standard deviation of their widths."""
    widths = shape_width(circles).double()
    return {"full_fraction": float(is_full(circles).double().mean()), "width_mean": float(widths.mean()),
            "width_std": float(widths.std())}


def posterior_scores(model: JNF, test: MultimodalDataset, example: MultimodalBatch, seed: int) -> dict[str, Any]:
    """Held-out log q, full/empty coherence and the example's generated circles of one posterior family."""
    torch.manual_seed(seed)
    classifiers = {name: FillClassifier() for name in model.modality_names}
    _, circles = generated_circles(model, example, NUM_GENERATED)
    return {
        "heldout_log_q": heldout_log_q(model, test),
        "coherence": coherence(model, test, classifiers)["pair"],
        "example_circles": circle_summary(circles),
    }


def plot_latent_space(models: dict[str, JNF], test: MultimodalDataset, path: Path) -> None:
    """Joint means of the test pairs per model; blue full, red empty, darker for larger squares."""
    widths = shape_width(test.batch(slice(None)).data["square"]).double().numpy()
    shade = 0.3 + 0.7 * (widths - widths.min()) / max(np.ptp(widths), 1.0)
    fig = Figure(figsize=(5 * len(models), 4.6), layout="constrained")
    for ax, (name, model) in zip(fig.subplots(1, len(models), squeeze=False)[0], models.items()):
        means = joint_means(model, test).numpy()
        for label, cmap in ((1, "Blues"), (0, "Reds")):
            keep = test.labels.numpy() == label
            ax.scatter(*means[keep].T, c=shade[keep], cmap=cmap, vmin=0, vmax=1, s=5)
        ax.set_title(f"{name}: joint latent means (darker = larger square)", fontsize=9)
        ax.set_xlabel("joint latent dimension 1")
        ax.set_ylabel("joint latent dimension 2")
        ax.legend(handles=[Line2D([], [], ls="", marker="o", color=c, label=t)
                           for c, t in (("tab:blue", "full"), ("tab:red", "empty"))], fontsize=8)
    fig.suptitle("Toy squares and circles: joint-encoder means of the test pairs, by fill", fontsize=10)
    save_figure(fig, path)


def plot_posteriors(
    panels: dict[str, tuple[JNF, np.ndarray]], test: MultimodalDataset, example: MultimodalBatch, path: Path
) -> None:
    """Per posterior (name → model, joint means): density contours of q(z | x_square) of the example over the joint
    means and its draws, above the circles decoded from 8 of them."""
    fig = Figure(figsize=(4.6 * len(panels), 6.2), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False, height_ratios=[4, 1.2])
    labels = test.labels.numpy()
    for k, (title, (model, means)) in enumerate(panels.items()):
        ax = axes[0, k]
        ax.scatter(*means[labels == 1].T, s=3, c="tab:blue", alpha=0.15, label="full (joint means)")
        ax.scatter(*means[labels == 0].T, s=3, c="tab:red", alpha=0.15, label="empty (joint means)")
        _contours(ax, model, example, means)
        z, circles = generated_circles(model, example, 8)
        ax.scatter(*z.numpy().T, marker="x", c="black", s=25, label="draws of q(z | x)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("joint latent dimension 1", fontsize=8)
        ax.set_ylabel("joint latent dimension 2", fontsize=8)
        ax.legend(fontsize=7, loc="lower right", markerscale=2)
        if k == 0:
            inset = ax.inset_axes([0.02, 0.74, 0.24, 0.24])
            inset.imshow(example.data["square"][0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            inset.set_xticks([])
            inset.set_yticks([])
        tiles = circles[:, 0].reshape(2, 4, 32, 32).permute(0, 2, 1, 3).reshape(64, 128)
        axes[1, k].imshow(tiles.numpy(), cmap="gray", vmin=0, vmax=1)
        axes[1, k].set_title("circles decoded from 8 draws", fontsize=8)
        axes[1, k].set_xticks([])
        axes[1, k].set_yticks([])
    fig.suptitle("Posterior of the latent given the square alone (inset): density contours of q(z | x_square) and its "
                 "draws (×), over the joint means of the test pairs; below, the circles decoded from 8 draws",
                 fontsize=10)
    save_figure(fig, path)


def _contours(ax: Axes, model: JNF, example: MultimodalBatch, means: np.ndarray, size: int = 150) -> None:
    """Density contours of q(z | x_square) on a grid spanning the joint means."""
    low, high = means.min(0), means.max(0)
    pad = 0.15 * (high - low)
    xs, ys = (np.linspace(low[i] - pad[i], high[i] + pad[i], size) for i in range(2))
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2), dtype=torch.float32)
    with evaluating(model):
        density = model.infer(example, ["square"]).log_prob(grid).exp().reshape(size, size).numpy()
    ax.contour(xs, ys, density, levels=np.linspace(0.05, 0.95, 6) * density.max(), cmap="viridis")


def main(argv=None) -> None:
    p = experiment_parser(__doc__.splitlines()[0], "results/jnf_toy")
    p.add_argument("--dry-run", action="store_true", help="print the run names and exit")
    args = p.parse_args(argv)
    base = experiment_config(args, QUICK, PAPER)
    stages = STAGES["paper" if args.paper else "quick"]
    modes = paper_references(args, PAPER_REFERENCES)
    configs = {
        f"{m}_seed{args.seed}": base.replace(
            model=m, reference=modes.get(m), **(SHARED if m == "jnf_shared" else {}),
            **({} if args.epochs else stage_settings(m, stages))
        )
        for m in MODELS
    }
    print(describe_references(MODELS, modes))
    if args.dry_run:
        print("\n".join(configs))
        return
    out = Path(args.out)
    models, results = {}, {"joint": {}, "posteriors": {}}
    for name, cfg in configs.items():
        model, _, train_set, test = train(cfg, out / name, progress=not args.no_progress)
        models[cfg.model] = model
        results["joint"][cfg.model] = {
            "joint_latent_acc": joint_accuracy(model, train_set, test, cfg.eval_num_train),
            "unimodal_latent_acc": latent_classification(model, train_set, test, num_train=cfg.eval_num_train),
        }
    # Both models train on the same data: train_set and test are the last run's splits.
    twin = fit_gaussian_twin(models["jnf"], configs[f"jnf_seed{args.seed}"], train_set, not args.no_progress)
    index = example_index(test)
    example = test.batch(slice(index, index + 1))
    posteriors = {"jnf_gaussian": twin, "jnf_flow": models["jnf"], "jnf_shared_flow": models["jnf_shared"]}
    for name, model in posteriors.items():
        results["posteriors"][name] = posterior_scores(model, test, example, args.seed)
    results["example"] = {"test_index": index, "square_width": int(shape_width(example.data["square"])[0])}
    results["configs"] = {name: cfg.to_dict() for name, cfg in configs.items()}
    (out / "toy_results.json").write_text(json.dumps(results, indent=2))
    plot_latent_space(models, test, out / "latent_space.png")
    means = {name: joint_means(model, test).numpy() for name, model in models.items()}
    titles = {"jnf_gaussian": "JNF, Gaussian q(z | x_square)", "jnf_flow": "JNF, flow q(z | x_square)",
              "jnf_shared_flow": "JNF-Shared, flow q(z | g(x_square))"}
    panels = {titles[n]: (m, means["jnf_shared" if n == "jnf_shared_flow" else "jnf"]) for n, m in posteriors.items()}
    torch.manual_seed(args.seed)
    plot_posteriors(panels, test, example, out / "posteriors.png")
    _print_summary(results)
    print(f"results: {out}/toy_results.json, {out}/latent_space.png, {out}/posteriors.png")


def _print_summary(results: dict[str, Any]) -> None:
    for name, scores in results["joint"].items():
        print(f"{name:<12} joint latent acc {scores['joint_latent_acc']:.3f}  unimodal "
              + ", ".join(f"{m} {v:.3f}" for m, v in scores["unimodal_latent_acc"].items()))
    print(f"{'posterior':<18}{'log q sq':>10}{'log q ci':>10}{'sq→ci':>8}{'ci→sq':>8}{'full':>7}{'width sd':>10}")
    for name, s in results["posteriors"].items():
        log_q, pair, circles = s["heldout_log_q"], s["coherence"], s["example_circles"]
        print(f"{name:<18}{log_q['square']:>10.3f}{log_q['circle']:>10.3f}{pair['square->circle']:>8.3f}"
              f"{pair['circle->square']:>8.3f}{circles['full_fraction']:>7.2f}{circles['width_std']:>10.2f}")


if __name__ == "__main__":
    main()
