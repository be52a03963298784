"""Subset-posterior sampling: pyromm's batched HMC on cached encodings vs MultiVae's JNF sampler, which re-encodes.

Targets: for B samples of the embedded digits (training split; views m0 and m1, (1, 8, 8)), the product of experts

    log π(z) = log q_0(z | x_0) + log q_1(z | x_1) − log N(z; 0, I),   q_m = N(μ_m(x_m), diag σ_m²(x_m)),

with μ_m, log σ_m² from MLP encoders (pyromm.nn.MLPEncoder, 64 → 256 → 256 → 2D; random weights, the bias of
the log-variance head drawn so that σ_m spans 0.05–1 over the dimensions, like the informative and unused
dimensions of a trained VAE). |S| = 2, so the JNF reference's prior power (once) and the product of experts
(|S| − 1) agree; π is Gaussian and its closed form (``SubsetTarget.closed_form``) is the ground truth.

* reference: ``pyromm.infer.hmc.reference_hmc``, MultiVae's JNF sampler:
  the data replicated N times (N chains per sample), chains started at a draw of a random member's Gaussian,
  100 HMC steps of 10 leapfrog steps with ε = 0.01, identity mass, no adaptation, and the encoders re-run at
  every one of the 100 · 11 gradient evaluations. MultiVae keeps each chain's final state: N draws per sample.
  The table also scores all 100 states of each chain, which MultiVae discards (a generous upper bound).
* batched: ``pyromm.infer.hmc.batched_hmc`` on ``SubsetTarget.from_posteriors`` (the encoders run once), with
  step-size and diagonal-mass adaptation during the warm-up; every chain of every sample in one tensor program.

Scores per sampler: wall and process-CPU time (encoding included), ESS = Σ_b min_d bulk-ESS_bd (ArviZ, per
target b and coordinate d; also the mean over d), ESS per second (of CPU time on a CPU: with one thread the run's
own compute, robust to other load on a shared machine; of wall time on a GPU), and the errors against the closed
form, |mean − μ| / σ and |sd / σ − 1| averaged over targets and coordinates. Ratios are batched / reference.

    OMP_NUM_THREADS=1 python benchmarks/subset_sampler.py --threads 1 [--num-targets 64] [--latent-dim 8]
        [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pyro.distributions as dist
import torch
from torch import Tensor

from pyromm.data import load_digits_multiview
from pyromm.diagnostics import mcmc_to_inference_data
from pyromm.infer.hmc import batched_hmc, reference_hmc
from pyromm.infer.subset_posterior import SubsetTarget
from pyromm.nn import MLPEncoder

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

T = TypeVar("T")
SUBSET = ("m0", "m1")
MCMC_STEPS, N_LF, EPS = 100, 10, 0.01  # MultiVae's encode() defaults


def make_encoders(latent_dim: int, device: torch.device) -> dict[str, MLPEncoder]:
    """One MLP encoder per view; log-variance biases with σ = exp(U(log 0.05, log 1)) per dimension."""
    g = torch.Generator().manual_seed(0)
    encoders = {}
    for i, m in enumerate(SUBSET):
        torch.manual_seed(i)
        encoder = MLPEncoder((1, 8, 8), latent_dim, hidden=(256, 256))
        log_scale = math.log(0.05) + (math.log(1.0) - math.log(0.05)) * torch.rand(latent_dim, generator=g)
        with torch.no_grad():
            encoder.log_var.bias.copy_(2 * log_scale)
        encoders[m] = encoder.to(device).eval()
    return encoders


def posterior(encoder: MLPEncoder, x: Tensor) -> dist.Independent:
    loc, log_var = encoder(x)
    return dist.Normal(loc, torch.exp(0.5 * log_var), validate_args=False).to_event(1)


def standard_normal(latent_dim: int, device: torch.device) -> dist.Independent:
    zeros = torch.zeros(latent_dim, device=device)
    return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


def timed(run: Callable[[], T], device: torch.device) -> tuple[T, dict[str, float]]:
    """``run()`` and its wall-clock and process-CPU seconds (CUDA synchronised at both ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def run_reference(encoders, x, prior, args, reencode: bool = True) -> Tensor:
    """MultiVae's sampler, the states ``(MCMC_STEPS, N, B, D)``. ``reencode``: the encoders run at every gradient
    evaluation, on the data replicated N times (MultiVae); else on cached encodings."""
    chains, device = args.reference_chains, args.device
    replicated = {m: x[m].repeat(chains, 1, 1, 1) for m in SUBSET}

    def reencoding(z: Tensor) -> Tensor:  # z (N, B, D) -> (N, B); encodes N·B rows at every call
        posteriors = {m: posterior(encoders[m], replicated[m]) for m in SUBSET}
        target = SubsetTarget.from_posteriors(posteriors, SUBSET, prior, "once")
        return target(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])

    generator = torch.Generator(device).manual_seed(1)
    with torch.no_grad():
        cached = SubsetTarget.from_posteriors({m: posterior(encoders[m], x[m]) for m in SUBSET}, SUBSET, prior, "once")
    z = cached.init_from_members(chains, seed=1)
    log_target = reencoding if reencode else cached
    states = []
    for _ in range(MCMC_STEPS):  # one step at a time, to keep every state (reference_hmc keeps the last only)
        z = reference_hmc(log_target, z, mcmc_steps=1, n_lf=N_LF, eps=EPS, generator=generator)
        states.append(z)
    return torch.stack(states)


def run_batched(encoders, x, prior, args) -> tuple[Tensor, dict[str, Tensor]]:
    """pyromm's path: encode once, then ``batched_hmc``; the draws ``(S, C, B, D)`` and statistics."""
    generator = torch.Generator(args.device).manual_seed(2)
    with torch.no_grad():
        target = SubsetTarget.from_posteriors({m: posterior(encoders[m], x[m]) for m in SUBSET}, SUBSET, prior)
    init = target.init_from_members(args.chains, seed=2)
    return batched_hmc(target, init, args.warmup, args.samples, num_leapfrog=args.leapfrog, generator=generator)


def score(chains_first: Tensor, closed: dist.Independent, times: dict[str, float], clock: str) -> dict:
    """ESS and errors of draws ``(chains, draws, B, D)`` against the closed form; ESS/s on ``clock``."""
    draws = chains_first.double().cpu().numpy()
    idata = mcmc_to_inference_data(draws, dims={"z": ["target", "z_dim"]})
    ess = az.ess(idata, method="bulk")["z"].values  # (B, D)
    pooled = draws.reshape(-1, *draws.shape[2:])
    mu, sigma = closed.mean.double().cpu().numpy(), closed.stddev.double().cpu().numpy()
    return {
        "draws_per_target": pooled.shape[0],
        **times,
        "ess_min": float(ess.min(1).sum()),
        "ess_mean": float(ess.mean(1).sum()),
        "ess_per_s": float(ess.min(1).sum()) / times[clock],
        "mean_err": float((np.abs(pooled.mean(0) - mu) / sigma).mean()),
        "std_err": float(np.abs(pooled.std(0, ddof=1) / sigma - 1).mean()),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-targets", type=int, default=64, help="samples B, one subset posterior each")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--device", type=torch.device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--reference-chains", type=int, default=32, help="MultiVae: N samples per data point = N chains")
    p.add_argument("--chains", type=int, default=4, help="batched: chains per target")
    p.add_argument("--warmup", type=int, default=200, help="batched: adaptation iterations")
    p.add_argument("--samples", type=int, default=500, help="batched: draws kept per chain")
    p.add_argument("--leapfrog", type=int, default=10, help="batched: leapfrog steps per iteration")
    p.add_argument("--json", help="write the settings and scores here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_digits_multiview("train", num_views=len(SUBSET), seed=0)
    if not 1 <= args.num_targets <= len(data):
        raise SystemExit(f"--num-targets must be in 1..{len(data)}")
    x = {m: data.data[m][: args.num_targets].to(args.device) for m in SUBSET}
    encoders = make_encoders(args.latent_dim, args.device)
    prior = standard_normal(args.latent_dim, args.device)
    with torch.no_grad():
        closed = SubsetTarget.from_posteriors(
            {m: posterior(encoders[m], x[m]) for m in SUBSET}, SUBSET, prior
        ).closed_form()

    # process CPU time on a CPU (with one thread, the run's own compute, robust to other load), else wall time
    clock = "cpu_s" if args.device.type == "cpu" else "wall_s"
    states, reference_t = timed(lambda: run_reference(encoders, x, prior, args), args.device)
    cached_states, cached_t = timed(lambda: run_reference(encoders, x, prior, args, reencode=False), args.device)
    (draws, stats), batched_t = timed(lambda: run_batched(encoders, x, prior, args), args.device)
    rows = {  # the final states: N draws of one chain (independent chains)
        "reference (final states)": score(states[-1].unsqueeze(0), closed, reference_t, clock),
        f"reference (all {MCMC_STEPS} states)": score(states.movedim(0, 1), closed, reference_t, clock),
        "reference, cached encodings": score(cached_states[-1].unsqueeze(0), closed, cached_t, clock),
        "batched": score(draws.movedim(0, 1), closed, batched_t, clock),
    }
    rows["batched"]["divergences"] = int(stats["diverging"].sum())
    rows["batched"]["accept_prob"] = float(stats["accept_prob"].mean())
    passes = {"reference": MCMC_STEPS * (N_LF + 1), "reference, cached encodings": 1, "batched": 1}
    settings = {
        **{k: str(v) if isinstance(v, torch.device) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "threads_used": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "ess_per_s_clock": clock,
        "loadavg": os.getloadavg(),
        "encoder_passes_per_modality": passes,
        "posterior_sd_range": [float(closed.stddev.min()), float(closed.stddev.max())],
    }
    print(json.dumps(settings))
    header = ("sampler", "draws/target", "wall s", "cpu s", "ESS min", "ESS mean", "ESS/s", "mean err", "std err")
    print(f"{header[0]:<28}" + "".join(f"{h:>12}" for h in header[1:]))
    for name, r in rows.items():
        print(
            f"{name:<28}{r['draws_per_target']:>12d}{r['wall_s']:>12.2f}{r['cpu_s']:>12.2f}{r['ess_min']:>12.0f}"
            f"{r['ess_mean']:>12.0f}{r['ess_per_s']:>12.1f}{r['mean_err']:>12.3f}{r['std_err']:>12.3f}"
        )
    batched = rows["batched"]
    print(f"batched: {batched['divergences']} divergences, mean acceptance {batched['accept_prob']:.2f}")
    same = (cached_states - states).abs().max().item()
    print(f"reference, cached vs re-encoding: max |difference| of the states {same:.1e} (0: the same chains)")
    for name in list(rows)[:3]:
        print(
            f"batched / {name}: throughput (ESS/s) x{batched['ess_per_s'] / rows[name]['ess_per_s']:.1f}, "
            f"{clock[:-2]} time x{batched[clock] / rows[name][clock]:.2f}, "
            f"ESS x{batched['ess_min'] / rows[name]['ess_min']:.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
