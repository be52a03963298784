"""Time a pyromm training step against MultiVae 1.0.3 on the same networks, batch and objective.

Models: MVAE, MMVAE, MoPoE, MVTCAE, JMVAE, MMVAE+. For each, the pyromm model and objective come from
``pyromm.config.RunConfig`` + ``pyromm.run.build_model`` / ``build_objective`` (network ``conv``, 3 views of
PolyMNIST-shaped random images (3, 28, 28), latent 64 (MMVAE+: 64 shared + 64 private), batch 128,
Laplace(0.75) likelihood); the MultiVae model gets deep copies of the very same encoder and decoder modules
(and, for JMVAE, of pyromm's joint encoder), wrapped in MultiVae's ``BaseEncoder`` / ``BaseDecoder`` /
``BaseJointEncoder`` interface (MMVAE+: ``BaseMultilatentEncoder``, the encoder's outputs split into the shared
block, first, and the private block; MultiVae decodes [z, w] where pyromm decodes [w, z], so its decoder
wrapper swaps the halves back, one small ``cat`` per call), so both start from identical weights. One step is
``zero_grad; loss; backward; step`` with Adam (lr 1e-3) on each side, as MultiVae's trainer does it
(``model(inputs, epoch=...).loss``); the timings interleave the two sides for several rounds and report
the median step time and the ratio MultiVae / pyromm (> 1: pyromm is faster). On a CPU the step time is
the process CPU time (``time.process_time``: with one thread it is the step's own compute, not the time other
processes hold the core, though they still slow it through shared caches and memory bandwidth); the
wall-clock ratio is reported next to it. On a GPU it is the wall-clock time after ``torch.cuda.synchronize()``.
The number of timed steps per round is sized from the warm-up steps so that each model takes about
``--budget`` seconds (at least one step per side per round).
The table also lists how many batches' worth of rows each side pushes through the encoders and decoders
in one step (forward hooks on the PolyMNIST nets), which explains most ratios: the networks dominate.

Before timing, every pair is checked: with all sampling noise set to zero (z = posterior mean, so the
losses are deterministic) on a batch of 126 samples (a multiple of MoPoE's 7 subsets, where both
libraries cut the batch into the same blocks), the two losses must agree to a relative 1e-3 (reported:
``loss err``, the relative difference) and ``grad err`` is max_p ||g_pyromm - g_multivae|| / ||g_pyromm||
over the parameters of the shared networks. (MMVAE's and MMVAE+'s differ by ~1e-4: MultiVae normalises its
DReG weights as exp(lw - logsumexp lw) in float32 with |lw| ~ 7.5e3, so they sum to 1 only to ~1e-4; pyromm
uses softmax. In float64 the MMVAE+ pair agrees to 2e-8.) MultiVae's MMVAE and MMVAE+ return the batch *sum*
of the bound, pyromm the batch mean: their loss and gradients are divided by the batch size for the check
(Adam is invariant to that scale).

Run it with the benchmark environment's Python (MultiVae lives only there, never as a pyromm dependency):

    bash benchmarks/setup_multivae_env.sh          # once: creates .bench-venv (see benchmarks/README.md)
    .bench-venv/bin/python benchmarks/multivae_compare.py [--steps 10 --rounds 3 --threads 1 --json out.json]

Environment (``benchmarks/setup_multivae_env.sh``): ``python -m venv --system-site-packages .bench-venv``
reuses the system torch (2.13 CPU) and pyromm; ``pip install --no-deps multivae==1.0.3 pythae==0.1.2
nltk==3.10.4`` adds MultiVae and the two pure-Python packages it imports that the system lacks (torch is
never reinstalled). MultiVae imports ``torchvision`` at import time (datasets, transforms, ``make_grid``,
the FID inception net), but no torchvision build matches torch 2.13 CPU here, so the environment holds a
*stub* ``torchvision`` package in its own site-packages: it only provides the names MultiVae imports
(``torchvision.{datasets, datasets.utils, models, transforms, utils}``, any attribute); transforms can be
constructed (MultiVae builds ``ToTensor()`` as a default argument) but calling any of them, building a
dataset or calling ``make_grid``/``save_image``/a model raises ``NotImplementedError``. None of that is on
the path of a training step: the step uses MultiVae's models only (no trainer, datasets or metrics), so
the stub cannot change what is timed. ``torchmetrics``, ``imageio`` and ``huggingface_hub`` are imported
only lazily or by metrics/samplers and are not installed.

Settings: ``torch.set_num_threads(--threads)`` (1 by default: the benchmark machine is shared; with one
thread the ratio reflects per-step work and Python overhead rather than scheduling noise). By default
torch.distributions argument validation keeps its library default (on; pyromm passes
``validate_args=False`` where it builds posteriors, MultiVae does not); ``--validation off`` turns it off
globally for both sides. Denormal floats are flushed to zero (``torch.set_flush_denormal(True)``) for both
sides unless ``--keep-denormals``: after a few steps MMVAE's and MMVAE+'s importance weights are so peaked that
5-10 % of the gradients reaching the decoders are denormal, which x86 CPUs process many times slower; each
step is then slower than the last (in one run pyromm 4.2, 13.1, 18.0 s, MultiVae 4.6, 10.9, 15.3 s), and the
ratio measures which side's training happened to produce more denormals rather than the libraries (neither
sets the flag itself).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from torch import nn

from pyromm.config import RunConfig
from pyromm.data import MultimodalBatch
from pyromm.nn import MLPDecoder, MLPEncoder, PolyMNISTConvDecoder, PolyMNISTConvEncoder
from pyromm.run import build_model, build_objective

from common import add_denormal_option, flush_denormals  # benchmarks/common.py, next to this script

try:
    from multivae.models import (
        JMVAE, MMVAE, MVAE, MVTCAE, JMVAEConfig, MMVAEConfig, MMVAEPlus, MMVAEPlusConfig, MoPoE, MoPoEConfig, MVAEConfig,
        MVTCAEConfig,
    )
    from multivae.models.base import BaseDecoder, BaseEncoder
    from multivae.models.nn import BaseJointEncoder, BaseMultilatentEncoder
    from pythae.data.datasets import DatasetOutput
    from pythae.models.base.base_utils import ModelOutput
except ImportError as error:  # pragma: no cover - only outside the benchmark environment
    raise SystemExit(
        f"cannot import MultiVae ({error}); run this script with the benchmark environment's Python: "
        "bash benchmarks/setup_multivae_env.sh && .bench-venv/bin/python benchmarks/multivae_compare.py"
    ) from error

IMAGE_SHAPE = (3, 28, 28)
CHECK_BATCH = 126  # a multiple of 7 (MoPoE's subsets for 3 views) and of 3


# --- MultiVae's network interface around pyromm's modules -------------------------------------------------


class MultiVaeEncoder(BaseEncoder):
    """A pyromm encoder ``x -> (loc, log_var)`` as a MultiVae/pythae encoder ``x -> ModelOutput``."""

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, x):
        loc, log_var = self.net(x)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class MultiVaeDecoder(BaseDecoder):
    """A pyromm decoder ``z -> params`` as a MultiVae/pythae decoder ``z -> ModelOutput(reconstruction)``."""

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z))


class MultiVaeMultilatentEncoder(BaseMultilatentEncoder):
    """A pyromm MMVAE+ encoder ``x -> (loc, second)``, shared block first, as MultiVae's ``x -> ModelOutput`` with
    the shared (``embedding``) and private (``style_*``) parameters apart."""

    def __init__(self, net: nn.Module, shared_dim: int, private_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim, self.style_dim = net, shared_dim, private_dim

    def forward(self, x):
        loc, second = self.net(x)
        s = self.latent_dim
        return ModelOutput(
            embedding=loc[:, :s], log_covariance=second[:, :s], style_embedding=loc[:, s:], style_log_covariance=second[:, s:]
        )


class MultiVaeSwappedDecoder(BaseDecoder):
    """A pyromm MMVAE+ decoder of ``[w, z]`` (private first) as MultiVae's decoder of ``[z, w]`` (shared first)."""

    def __init__(self, net: nn.Module, shared_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, shared_dim

    def forward(self, u):
        s = self.latent_dim
        return ModelOutput(reconstruction=self.net(torch.cat([u[:, s:], u[:, :s]], -1)))


class MultiVaeJointEncoder(BaseJointEncoder):
    """pyromm's ``JointEncoder`` (dict of modalities -> (loc, log_var)) as a MultiVae joint encoder."""

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, x: dict):
        loc, log_var = self.net(x)
        return ModelOutput(embedding=loc, log_covariance=log_var)


# --- one pyromm/MultiVae pair per model ------------------------------------------------------------------


@dataclass
class Pair:
    """The two sides of one comparison.

    ``mv_scale`` turns MultiVae's loss into pyromm's (1/B where MultiVae sums over the batch);
    ``param_pairs`` lists (pyromm parameter, MultiVae parameter) of the same module, for the gradient check.
    """

    name: str
    cfg: RunConfig
    pm_model: nn.Module
    pm_objective: Callable
    hyper: dict[str, float]
    mv_model: nn.Module
    mv_kwargs: dict[str, Any] = field(default_factory=dict)
    mv_scale: Callable[[int], float] = lambda batch_size: 1.0
    param_pairs: list[tuple[nn.Parameter, nn.Parameter]] = field(default_factory=list)
    notes: str = ""

    def pm_loss(self, batch: MultimodalBatch) -> torch.Tensor:
        return self.pm_objective(self.pm_model, batch, self.hyper).loss

    def mv_loss(self, inputs) -> torch.Tensor:
        return self.mv_model(inputs, **self.mv_kwargs).loss


def pyromm_side(model: str, args, **overrides) -> tuple[RunConfig, nn.Module, Callable, dict[str, float]]:
    """pyromm's model and objective exactly as ``pyromm train --set model=<model> --set network=<--network>``
    builds them."""
    cfg = RunConfig(
        dataset="polymnist",
        model=model,
        network=args.network,
        hidden=args.hidden,
        num_views=args.views,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        likelihood="laplace",
        likelihood_scale=0.75,
        seed=0,
        **overrides,
    )
    shapes = {f"m{i}": IMAGE_SHAPE for i in range(cfg.num_views)}
    pm_model = build_model(cfg, shapes)
    hyper = {"beta": cfg.beta}
    if model == "jmvae":
        hyper["kl_warmup"] = 1.0  # after the warm-up (MultiVae: annealing factor 1 once epoch >= warmup)
    return cfg, pm_model, build_objective(cfg), hyper


def multivae_common(
    cfg: RunConfig, pm_model, wrap_encoder: Callable = MultiVaeEncoder, wrap_decoder: Callable = MultiVaeDecoder
) -> tuple[dict, dict, dict, list]:
    """Deep copies of pyromm's encoders/decoders wrapped as ``wrap_*(net, cfg.latent_dim)``, the shared config
    fields and the parameter pairs."""
    names = pm_model.modality_names
    encoders = {n: wrap_encoder(copy.deepcopy(pm_model.encoders[n]), cfg.latent_dim) for n in names}
    decoders = {n: wrap_decoder(copy.deepcopy(pm_model.decoders[n]), cfg.latent_dim) for n in names}
    common = dict(
        n_modalities=len(names),
        latent_dim=cfg.latent_dim,
        decoders_dist={n: cfg.likelihood for n in names},
        decoder_dist_params={n: {"scale": cfg.likelihood_scale} for n in names},
    )
    pairs = []
    for n in names:
        pairs += list(zip(pm_model.encoders[n].parameters(), encoders[n].net.parameters()))
        pairs += list(zip(pm_model.decoders[n].parameters(), decoders[n].net.parameters()))
    return encoders, decoders, common, pairs


def build_mvae(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("mvae", args)
    enc, dec, common, pairs = multivae_common(cfg, pm)
    mv_cfg = MVAEConfig(**common, use_subsampling=True, k=cfg.num_random_subsets, warmup=cfg.kl_warmup_epochs, beta=cfg.beta)
    return Pair(
        "mvae", cfg, pm, obj, hyper, MVAE(mv_cfg, enc, dec), {"epoch": 1}, param_pairs=pairs,
        notes="ELBO(X) + sum_m ELBO(x_m), PoE with prior expert, k=0 random subsets",
    )


def build_mmvae(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("mmvae", args)
    enc, dec, common, pairs = multivae_common(cfg, pm)
    mv_cfg = MMVAEConfig(
        **common, K=cfg.num_importance_samples, prior_and_posterior_dist="laplace_with_softmax", learn_prior=True,
        loss={"dreg": "dreg_looser", "iwae": "iwae_looser"}[cfg.estimator],
    )
    mv = MMVAE(mv_cfg, enc, dec)
    with torch.no_grad():  # both 0 at start; copied so the pair stays exact if either default changes
        mv.prior_log_var.copy_(pm.prior_logits.detach().reshape(mv.prior_log_var.shape))
    pairs.append((pm.prior_logits, mv.prior_log_var))
    return Pair(
        "mmvae", cfg, pm, obj, hyper, mv, {"epoch": 1}, mv_scale=lambda b: 1.0 / b, param_pairs=pairs,
        notes=f"K={cfg.num_importance_samples}, {cfg.estimator} looser, Laplace experts, learnt prior scale",
    )


def build_mopoe(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("mopoe_reference", args)
    enc, dec, common, pairs = multivae_common(cfg, pm)
    mv_cfg = MoPoEConfig(**common, subsets=None, beta=cfg.beta)
    return Pair(
        "mopoe", cfg, pm, obj, hyper, MoPoE(mv_cfg, enc, dec), {"epoch": 1}, param_pairs=pairs,
        notes="7 subsets, prior expert in the full subset, KL = sum_k pi_k KL(q_k || p) ('jensen')",
    )


def build_mvtcae(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("mvtcae", args)
    enc, dec, common, pairs = multivae_common(cfg, pm)
    mv_cfg = MVTCAEConfig(**common, alpha=cfg.alpha, beta=cfg.beta)
    return Pair(
        "mvtcae", cfg, pm, obj, hyper, MVTCAE(mv_cfg, enc, dec), {"epoch": 1}, param_pairs=pairs,
        notes=f"alpha={cfg.alpha}, beta={cfg.beta} (MultiVae's default beta 2.5 set to pyromm's)",
    )


def build_jmvae(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("jmvae", args)
    enc, dec, common, pairs = multivae_common(cfg, pm)
    joint = MultiVaeJointEncoder(copy.deepcopy(pm.joint_encoder), cfg.latent_dim)
    pairs += list(zip(pm.joint_encoder.parameters(), joint.net.parameters()))
    mv_cfg = JMVAEConfig(**common, alpha=cfg.alpha, warmup=cfg.kl_warmup_epochs, beta=cfg.beta)
    return Pair(
        "jmvae", cfg, pm, obj, hyper, JMVAE(mv_cfg, enc, dec, joint_encoder=joint), {"epoch": 1}, param_pairs=pairs,
        notes="pyromm's joint encoder given to MultiVae (its default MultipleHeadJointEncoder differs, see README)",
    )


def build_mmvae_plus(args) -> Pair:
    cfg, pm, obj, hyper = pyromm_side("mmvae_plus", args)
    private = pm.private_dim
    enc, dec, common, pairs = multivae_common(
        cfg, pm, lambda net, shared: MultiVaeMultilatentEncoder(net, shared, private), MultiVaeSwappedDecoder
    )
    mv_cfg = MMVAEPlusConfig(
        **common, K=cfg.num_importance_samples, prior_and_posterior_dist="laplace_with_softmax", learn_shared_prior=False,
        learn_modality_prior=True, beta=cfg.beta, modalities_specific_dim=private, loss="dreg_looser",
    )
    mv = MMVAEPlus(mv_cfg, enc, dec)
    with torch.no_grad():  # both 0 at start; copied so the pair stays exact if either default changes
        for n in pm.modality_names:
            mv.logvars_priors[n].copy_(pm.private_prior_logits[n].detach().reshape(mv.logvars_priors[n].shape))
    pairs += [(pm.private_prior_logits[n], mv.logvars_priors[n]) for n in pm.modality_names]
    return Pair(
        "mmvae_plus", cfg, pm, obj, hyper, mv, {"epoch": 1}, mv_scale=lambda b: 1.0 / b, param_pairs=pairs,
        notes=f"K={cfg.num_importance_samples}, DReG looser ({cfg.setting('dreg_detach')} detach), D_z={cfg.latent_dim}, "
        f"D_w={private}, learnt private priors, fixed p(u)",
    )


BUILDERS: dict[str, Callable[[argparse.Namespace], Pair]] = {
    "mvae": build_mvae,
    "mmvae": build_mmvae,
    "mopoe": build_mopoe,
    "mvtcae": build_mvtcae,
    "jmvae": build_jmvae,
    "mmvae_plus": build_mmvae_plus,
}


# --- checks and timing -----------------------------------------------------------------------------------


@contextlib.contextmanager
def no_noise():
    """All reparameterised draws return their location: Normal (``normal_``), Laplace (``uniform_`` -> 0),
    pyromm's stratified mixture (``torch.randn``)."""
    saved = (torch.Tensor.normal_, torch.Tensor.uniform_, torch.randn, torch.randn_like)
    torch.Tensor.normal_ = lambda self, *a, **k: self.zero_()
    torch.Tensor.uniform_ = lambda self, *a, **k: self.zero_()
    torch.randn = lambda *size, **k: torch.zeros(*size, **{n: v for n, v in k.items() if n in ("dtype", "device")})
    torch.randn_like = lambda t, **k: torch.zeros_like(t)
    try:
        yield
    finally:
        torch.Tensor.normal_, torch.Tensor.uniform_, torch.randn, torch.randn_like = saved


@contextlib.contextmanager
def count_passes(model: nn.Module, counts: dict[str, int]):
    """Adds to ``counts['encoder'/'decoder']`` the rows every modality encoder/decoder of ``model`` processes."""
    kinds = {PolyMNISTConvEncoder: "encoder", PolyMNISTConvDecoder: "decoder", MLPEncoder: "encoder", MLPDecoder: "decoder"}
    hooks = []
    for module in model.modules():
        kind = kinds.get(type(module))
        if kind is not None:
            def hook(mod, inputs, output, kind=kind):
                counts[kind] += inputs[0].shape[0]

            hooks.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def check_pair(pair: Pair, xs: list[torch.Tensor]) -> tuple[float, float, float, dict[str, dict[str, float]]]:
    """(pyromm loss, MultiVae loss rescaled, grad err, network passes) on the first ``CHECK_BATCH`` samples,
    noise-free; passes = rows through the encoders/decoders per step, in units of the batch size."""
    data = {f"m{i}": x[:CHECK_BATCH] for i, x in enumerate(xs)}
    batch, inputs = MultimodalBatch(data), DatasetOutput(data=data)
    scale = pair.mv_scale(CHECK_BATCH)
    pair.pm_model.zero_grad(set_to_none=True)
    pair.mv_model.zero_grad(set_to_none=True)
    rows = {"pyromm": {"encoder": 0, "decoder": 0}, "multivae": {"encoder": 0, "decoder": 0}}
    with no_noise():
        with count_passes(pair.pm_model, rows["pyromm"]):
            a = pair.pm_loss(batch)
        with count_passes(pair.mv_model, rows["multivae"]):
            b = pair.mv_loss(inputs)
        a.backward()
        b.backward()
    passes = {side: {k: v / CHECK_BATCH for k, v in r.items()} for side, r in rows.items()}
    a, b = a.item(), scale * b.item()
    if not math.isclose(a, b, rel_tol=1e-3):
        raise AssertionError(f"{pair.name}: pyromm loss {a} != MultiVae loss {b} (noise-free, same weights)")
    err = 0.0
    for p, q in pair.param_pairs:
        gp = torch.zeros_like(p) if p.grad is None else p.grad
        gq = torch.zeros_like(q) if q.grad is None else q.grad.reshape(p.shape) * scale
        err = max(err, ((gp - gq).norm() / gp.norm().clamp_min(1e-12)).item())
    pair.pm_model.zero_grad(set_to_none=True)
    pair.mv_model.zero_grad(set_to_none=True)
    return a, b, err, passes


def time_steps(step: Callable[[], None], steps: int, sync: bool) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of ``steps`` calls of ``step``."""
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        if sync:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def environment(args, device: torch.device) -> dict[str, Any]:
    import torchvision

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu})",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyromm": importlib.metadata.version("pyromm"),
        "multivae": importlib.metadata.version("multivae"),
        "pythae": importlib.metadata.version("pythae"),
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "distribution_validation": args.validation,
        "flush_denormal": not args.keep_denormals,
        "network": args.network,
        "hidden": args.hidden if args.network == "mlp" else None,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "views": args.views,
        "max_steps_per_round": args.steps,
        "rounds": args.rounds,
        "budget_s_per_model": args.budget,
        "optimizer": "Adam(lr=1e-3), zero_grad(set_to_none=True)",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(BUILDERS), default=list(BUILDERS))
    p.add_argument("--network", choices=("conv", "mlp"), default="conv",
                   help="PolyMNIST conv nets, or MLPs of --hidden units (small ones: the library's own per-step cost shows)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64], help="MLP hidden sizes (--network mlp)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="at most this many timed steps per side per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (pyromm, MultiVae, pyromm, ...)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first (they also size the rounds)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds of timed steps per model: steps per round = min(--steps, budget / (2 rounds t_step)), >= 1")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: shared machine)")
    p.add_argument("--validation", choices=("default", "off"), default="default",
                   help="torch.distributions argument validation: library default (on) or off for both sides")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the environment and results here")
    add_denormal_option(p)
    args = p.parse_args(argv)
    if args.batch_size < CHECK_BATCH:
        p.error(f"--batch-size must be >= {CHECK_BATCH} (the noise-free check batch)")
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)
    if args.validation == "off":
        pyro.enable_validation(False)  # also torch.distributions.Distribution.set_default_validate_args(False)
    flush_denormals(p, args)
    device = torch.device(args.device)
    sync = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(args.batch_size, *IMAGE_SHAPE, generator=g).to(device) for _ in range(args.views)]
    data = {f"m{i}": x for i, x in enumerate(xs)}
    batch, inputs = MultimodalBatch(data), DatasetOutput(data=data)
    env = environment(args, device)
    print(json.dumps(env))

    rows = []
    for name in args.models:
        pair = BUILDERS[name](args)
        pair.pm_model.to(device).train()
        pair.mv_model.to(device).train()
        pm_loss, mv_loss, grad_err, passes = check_pair(pair, xs)
        pm_opt = torch.optim.Adam(pair.pm_model.parameters(), lr=1e-3)
        mv_opt = torch.optim.Adam(pair.mv_model.parameters(), lr=1e-3)

        def pyromm_step():
            pm_opt.zero_grad(set_to_none=True)
            pair.pm_loss(batch).backward()
            pm_opt.step()

        def multivae_step():
            mv_opt.zero_grad(set_to_none=True)
            pair.mv_loss(inputs).backward()
            mv_opt.step()

        torch.manual_seed(1)
        warm_ours = time_steps(pyromm_step, args.warmup, sync)[0]
        warm_theirs = time_steps(multivae_step, args.warmup, sync)[0]
        per_step = max(statistics.median(warm_ours), statistics.median(warm_theirs))
        steps = max(1, min(args.steps, int(args.budget / (2 * args.rounds * per_step))))
        wall = {"pyromm": [], "multivae": []}
        cpu = {"pyromm": [], "multivae": []}
        for _ in range(args.rounds):
            for side, step in (("pyromm", pyromm_step), ("multivae", multivae_step)):
                w, c = time_steps(step, steps, sync)
                wall[side] += w
                cpu[side] += c
        # On a CPU the ratio uses process CPU time (robust to other processes on a shared machine; with one
        # thread it is the step's compute); on a GPU, wall-clock time after synchronising.
        clock = wall if sync else cpu
        t_ours, t_theirs = statistics.median(clock["pyromm"]), statistics.median(clock["multivae"])
        row = {
            "model": name,
            "pyromm_model": pair.cfg.model,
            "clock": "wall" if sync else "process_cpu",
            "pyromm_ms": 1e3 * t_ours,
            "multivae_ms": 1e3 * t_theirs,
            "ratio": t_theirs / t_ours,
            "pyromm_wall_ms": 1e3 * statistics.median(wall["pyromm"]),
            "multivae_wall_ms": 1e3 * statistics.median(wall["multivae"]),
            "wall_ratio": statistics.median(wall["multivae"]) / statistics.median(wall["pyromm"]),
            "steps_per_side": len(wall["pyromm"]),
            "pyromm_times_ms": [1e3 * t for t in clock["pyromm"]],
            "multivae_times_ms": [1e3 * t for t in clock["multivae"]],
            "check_loss_pyromm": pm_loss,
            "check_loss_multivae": mv_loss,
            "check_grad_rel_err": grad_err,
            "passes": passes,
            "notes": pair.notes,
        }
        rows.append(row)
        print(
            f"{name}: pyromm {row['pyromm_ms']:.1f} ms, MultiVae {row['multivae_ms']:.1f} ms ({row['clock']}), "
            f"ratio {row['ratio']:.2f}; wall ratio {row['wall_ratio']:.2f}; {row['steps_per_side']} steps per side",
            flush=True,
        )

    print()
    print(f"median step time ({rows[0]['clock'] if rows else ''} ms); ratio = MultiVae / pyromm (> 1: pyromm faster)")
    print("enc/dec passes: rows through the encoders / decoders per step, in batches (pyromm | MultiVae)")
    print(
        f"{'model':<11}{'pyromm':>9}{'MultiVae':>10}{'ratio':>7}{'wall ratio':>12}{'steps':>7}{'loss err':>10}"
        f"{'grad err':>10}{'enc passes':>13}{'dec passes':>13}"
    )
    for r in rows:
        loss_err = abs(r["check_loss_pyromm"] - r["check_loss_multivae"]) / abs(r["check_loss_pyromm"])
        pm, mv = r["passes"]["pyromm"], r["passes"]["multivae"]
        print(
            f"{r['model']:<11}{r['pyromm_ms']:>9.1f}{r['multivae_ms']:>10.1f}{r['ratio']:>7.2f}{r['wall_ratio']:>12.2f}"
            f"{r['steps_per_side']:>7}{loss_err:>10.1e}{r['check_grad_rel_err']:>10.1e}"
            f"{pm['encoder']:>7g} | {mv['encoder']:<3g}{pm['decoder']:>7g} | {mv['decoder']:<3g}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
