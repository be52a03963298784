"""The loss and gradients a run config's training objective gives at fixed weights, with the noise switched off, to
compare two versions of pyromm (or two implementations of one objective) on an experiment's exact settings.

Every reparameterised Normal and Laplace draw returns its location (z = μ), so the loss is a deterministic function
of the weights and the batch, and two versions that compute the same objective give the same numbers to float32
rounding whatever order they draw their noise in.

    # under each checkout (PYTHONPATH=<checkout>), from the same run config and the same weights file:
    python benchmarks/objective_snapshot.py save RUN/config.json before.pt --weights init.pt --data-root DATA
    python benchmarks/objective_snapshot.py save RUN/config.json after.pt --weights init.pt --data-root DATA
    python benchmarks/objective_snapshot.py compare before.pt after.pt

``--weights`` is written (the model built under ``torch.manual_seed(0)``) when missing and loaded otherwise; the
batch is the first ``--batch`` training samples. ``compare`` prints both losses and max over parameters of
‖g_a − g_b‖ / ‖g_a‖, and exits 1 when the losses differ by more than ``--tolerance`` relative or a parameter has a
gradient on one side only.

``trajectory`` trains the config with ``pyromm.run.train`` for ``--steps`` Adam steps, noise on, and records the
gradient 2-norm of every step. Two versions that draw the same noise in the same order give the same norms until
float32 rounding, amplified by training, separates them; ``compare`` on two trajectories prints the first step where
they differ by more than 1e-6 and by more than 1e-2, relative.

    python benchmarks/objective_snapshot.py trajectory RUN/config.json before_steps.pt --steps 60 --data-root DATA
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from pyromm.config import RunConfig
from pyromm.run import build_model, build_objective, load_data, train


def location(self, sample_shape=torch.Size()):
    """A zero-noise ``rsample``: the distribution's location, broadcast to the draw's shape."""
    return self.loc.expand(self._extended_shape(sample_shape))


@contextmanager
def zero_noise() -> Iterator[None]:
    """Within the block, every Normal and Laplace ``rsample`` (Pyro's included) returns the location."""
    families = (torch.distributions.Normal, torch.distributions.Laplace)
    originals = [family.rsample for family in families]
    try:
        for family in families:
            family.rsample = location
        yield
    finally:
        for family, original in zip(families, originals):
            family.rsample = original


@contextmanager
def recorded_gradient_norms() -> Iterator[list[float]]:
    """Within the block, every ``torch.optim.Adam`` step first appends ‖g‖₂ over its parameters to the list."""
    norms: list[float] = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return original(self, *args, **kwargs)

    torch.optim.Adam.step = step
    try:
        yield norms
    finally:
        torch.optim.Adam.step = original


def read_config(args: argparse.Namespace) -> RunConfig:
    """The config of ``args.config`` (a run's config.json or a flat RunConfig JSON), on ``--data-root`` if given."""
    saved = json.loads(Path(args.config).read_text())
    cfg = RunConfig.from_dict(saved.get("run", saved))
    return cfg.replace(data_root=args.data_root) if args.data_root else cfg


def record_trajectory(args: argparse.Namespace) -> None:
    cfg = read_config(args)
    cfg = cfg.replace(epochs=1, train_limit=args.steps * cfg.batch_size)
    with tempfile.TemporaryDirectory() as run_dir, recorded_gradient_norms() as norms:
        train(cfg, run_dir, progress=False)
    if not norms:
        raise SystemExit(f"{args.config}: no torch.optim.Adam step was taken, and only Adam steps are recorded")
    torch.save({"norms": torch.tensor(norms, dtype=torch.float64)}, args.out)
    print(f"{cfg.model}: {len(norms)} steps, gradient norms -> {args.out}")


def save(args: argparse.Namespace) -> None:
    cfg = read_config(args).replace(train_limit=args.batch)
    train_set, _ = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, train_set.event_shapes)
    weights = Path(args.weights)
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        torch.save(model.state_dict(), weights)
    with zero_noise():
        loss = build_objective(cfg)(model, train_set.batch(slice(0, args.batch)), {"beta": cfg.beta}).loss
        loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    torch.save({"loss": loss.detach(), "grads": grads}, args.out)
    print(f"{cfg.model}: loss {loss.item():.6f}, gradients of {len(grads)} parameters -> {args.out}")


def compare_trajectories(a: Tensor, b: Tensor) -> int:
    n = min(len(a), len(b))
    difference = ((a[:n] - b[:n]).abs() / a[:n].abs()).tolist()
    first = {limit: next((i for i, d in enumerate(difference) if d > limit), None) for limit in (1e-6, 1e-2)}
    print(f"{n} steps; largest relative difference of the first three {max(difference[:3]):.1e}; first step "
          f"(0-based) beyond 1e-6: {first[1e-6]}, beyond 1e-2: {first[1e-2]}")
    return 1 if first[1e-6] is not None and first[1e-6] < 2 else 0


def compare(args: argparse.Namespace) -> int:
    a, b = (torch.load(path, weights_only=True) for path in (args.a, args.b))
    if "norms" in a and "norms" in b:
        return compare_trajectories(a["norms"], b["norms"])
    loss_a, loss_b = a["loss"].item(), b["loss"].item()
    only = sorted(set(a["grads"]) ^ set(b["grads"]))
    worst, where = 0.0, None
    for name in sorted(set(a["grads"]) & set(b["grads"])):
        ga, gb = a["grads"][name], b["grads"][name]
        error = ((ga - gb).norm() / ga.norm().clamp_min(1e-30)).item()
        if error > worst:
            worst, where = error, name
    loss_error = abs(loss_a - loss_b) / max(abs(loss_a), 1e-30)
    print(f"loss {loss_a:.6f} / {loss_b:.6f} (relative difference {loss_error:.1e}); largest gradient relative "
          f"difference {worst:.1e} ({where}); {len(a['grads'])} / {len(b['grads'])} parameters with gradients")
    if only:
        print(f"gradients on one side only: {only}")
    return 1 if only or loss_error > args.tolerance else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("save", help="loss and gradients of a run config's objective at zero noise")
    s.add_argument("config", help="a run's config.json (or a flat RunConfig JSON)")
    s.add_argument("out", help="where to write the loss and gradients (.pt)")
    s.add_argument("--weights", required=True, help="the weights file: written when missing, loaded otherwise")
    s.add_argument("--data-root", help="the data root (default: the config's)")
    s.add_argument("--batch", type=int, default=128, help="training samples in the batch (default: %(default)s)")
    t = commands.add_parser("trajectory", help="gradient norms of the first training steps, noise on")
    t.add_argument("config", help="a run's config.json (or a flat RunConfig JSON)")
    t.add_argument("out", help="where to write the gradient norms (.pt)")
    t.add_argument("--steps", type=int, default=60, help="Adam steps (default: %(default)s)")
    t.add_argument("--data-root", help="the data root (default: the config's)")
    c = commands.add_parser("compare", help="compare two saved snapshots, or two trajectories")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tolerance", type=float, default=1e-6, help="relative loss difference allowed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return compare(args)
    torch.set_num_threads(1)
    (save if args.command == "save" else record_trajectory)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
