r"""Samplers for subset posteriors: a batched HMC over many targets, Pyro's NUTS/HMC, and the JNF reference.

* ``batched_hmc``: every chain of every target in one tensor program (CPU or GPU), with per-target step-size
  (Pyro's ``DualAveraging`` on a tensor of log step sizes) and diagonal mass adaptation (Pyro's
  ``WelfordCovariance`` on per-target draws); the path for tens of thousands of subset posteriors.
* ``nuts_subset_posterior``: Pyro's NUTS (or HMC) on one target, several chains, full adaptation and per-draw
  statistics; the path users inspect (``PyroMCMCResult.to_inference_data``).
* ``reference_hmc``: MultiVae's JNF subset sampler (docs/objectives.md), for the benchmark.

All use the Hamiltonian H(z, p) = −log π(z) + ½ pᵀ M⁻¹ p with momentum p ~ N(0, M) and leapfrog steps
p ← p + (ε/2)∇log π(z), z ← z + ε M⁻¹ p, p ← p + (ε/2)∇log π(z); a proposal is accepted with probability
min(1, exp(−ΔH)), and a transition whose energy error ΔH exceeds 1000 (or is NaN) is divergent.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance
from torch import Tensor

from pyromm.diagnostics import mcmc_to_inference_data
from pyromm.infer.subset_posterior import LogDensity, SubsetTarget, seeded

MAX_ENERGY_ERROR = 1000.0
MASS_MODES = ("diag", "identity")


class DivergenceWarning(RuntimeWarning):
    """Post-warm-up transitions diverged (energy error > 1000): the draws may be biased; the run is kept."""


def _warn_divergences(where: str, diverging: Tensor) -> None:
    count = int(diverging.sum())
    if count:
        warnings.warn(
            f"{where}: {count} of {diverging.numel()} post-warm-up transitions diverged (energy error > "
            f"{MAX_ENERGY_ERROR:g}); they are kept and flagged in the 'diverging' statistic",
            DivergenceWarning,
            stacklevel=3,
        )


def _log_prob_and_grad(target: LogDensity, z: Tensor) -> tuple[Tensor, Tensor]:
    """log π(z) and ∇_z log π(z) for a batch of independent states (each output depends on its own z)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = target(z)
        if lp.shape != z.shape[:-1]:
            raise ValueError(f"the target returned shape {tuple(lp.shape)} for z of shape {tuple(z.shape)}")
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


def _check_initial(target: LogDensity, z: Tensor, lp: Tensor) -> None:
    if isinstance(target, SubsetTarget):
        target.check_finite(z)
    bad = ~torch.isfinite(lp)
    if bool(bad.any()):
        position = tuple(bad.nonzero()[0].tolist())
        raise ValueError(f"the target's log-density is {lp[position].item()} at the initial point {position}")


def adaptation_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Slow windows ``[start, end)`` of warm-up iterations whose draws re-estimate the diagonal mass.

    Stan's schedule: a fast initial buffer of 75 iterations, windows of 25, 50, 100, ... (the last one stretched
    to the terminal buffer), a fast terminal buffer of 50; 15% / 75% / 10% when the warm-up is shorter than
    150. Under 20 warm-up iterations there is no mass adaptation.
    """
    if num_warmup < 20:
        return []
    init, term, size = 75, 50, 25
    if init + term + size > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        size = num_warmup - init - term
    windows, start, last = [], init, num_warmup - term
    while True:
        end = start + size
        if end + 2 * size > last:
            windows.append((start, last))
            return windows
        windows.append((start, end))
        start, size = end, 2 * size


def _step_size_averaging(step_size: Tensor) -> DualAveraging:
    r"""Pyro's dual averaging of log ε, one scheme per target (its arithmetic is elementwise on tensors).

    Fed g_t = δ − ā_t (target minus mean acceptance over the chains of each target):
    H̄_t = (1 − 1/(t + t₀)) H̄_{t−1} + g_t/(t + t₀);  log ε_t = μ − √t H̄_t / γ;
    log ε̄_t = t^{−κ} log ε_t + (1 − t^{−κ}) log ε̄_{t−1};  γ = 0.05, t₀ = 10, κ = 0.75, and μ = log ε₀ (the
    paper's μ = log 10ε₀, Pyro's choice in its own kernels, leaves ε̄ several times too large, hence divergent,
    after a short adaptation phase).
    """
    return DualAveraging(prox_center=torch.log(step_size))


def _pooled_variance(window: WelfordCovariance, z: Tensor) -> None:
    """Feed each chain's state ``z[c] (B, D)`` to a diagonal ``WelfordCovariance``: the draws are pooled over chains."""
    for chain_state in z:
        window.update(chain_state)


def batched_hmc(
    target: LogDensity,
    init: Tensor,
    num_warmup: int,
    num_samples: int,
    step_size: float = 0.1,
    num_leapfrog: int = 10,
    adapt_step_size: bool = True,
    mass: str = "diag",
    target_accept: float = 0.8,
    jitter: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""HMC on C chains of B independent targets at once: ``init (C, B, D)`` → draws ``(num_samples, C, B, D)``.

    ``target`` maps z ``(C, B, D)`` to log π ``(C, B)`` (e.g. a ``SubsetTarget``). Each transition draws
    p ~ N(0, M), runs ``num_leapfrog`` leapfrog steps of size ε_b·u (u ~ U(1 − jitter, 1 + jitter) per chain
    and target, which breaks the periodicity of fixed-length trajectories) and applies the Metropolis
    correction. Warm-up (``num_warmup`` iterations, discarded): ε_b starts from a doubling/halving search around
    ``step_size`` and follows dual averaging (``_step_size_averaging``) towards mean acceptance
    ``target_accept`` over the chains of target b; with ``mass='diag'`` the inverse mass M⁻¹_b = diag(v_b) is
    re-estimated at the end of each slow window (``adaptation_windows``) as Stan's regularised Welford variance
    of the window's n draws pooled over chains, v = n/(n+5)·Var + 10⁻³·5/(n+5), and the step size search and
    the dual averaging restart. ``mass='identity'`` keeps M = I.

    Returns the draws and per-draw statistics ``(num_samples, C, B)``: ``accept_prob``, ``step_size`` (the
    jittered ε used), ``energy`` (H after momentum resampling), ``lp`` (log π of the draw), ``diverging``
    (ΔH > 1000 or NaN: rejected, counted and warned about with ``DivergenceWarning``) and ``n_steps``.
    Runs on the device and dtype of ``init``; ``generator`` (on that device) makes it reproducible.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if num_warmup < 0 or num_leapfrog < 1 or step_size <= 0 or not 0 <= jitter < 1:
        raise ValueError("need num_warmup >= 0, num_leapfrog >= 1, step_size > 0 and 0 <= jitter < 1")
    if mass not in MASS_MODES:
        raise ValueError(f"mass must be one of {MASS_MODES}, got {mass!r}")
    if init.ndim != 3:
        raise ValueError(f"init must have shape (chains, targets, dim), got {tuple(init.shape)}")
    num_chains, num_targets, dim = init.shape
    options = {"device": init.device, "dtype": init.dtype}

    z = init.detach().clone()
    lp, grad = _log_prob_and_grad(target, z)
    _check_initial(target, z, lp)
    inv_mass = torch.ones(num_targets, dim, **options)

    def transition(z, lp, grad, eps, steps):
        """One HMC transition of ``steps`` leapfrog steps with per-(chain, target) step sizes ``eps (C, B)``."""
        p = torch.randn(z.shape, generator=generator, **options) * inv_mass.rsqrt()
        energy = -lp + 0.5 * (inv_mass * p * p).sum(-1)
        step = eps.unsqueeze(-1)
        z_new, p = z, p + 0.5 * step * grad
        for i in range(steps):
            z_new = z_new + step * inv_mass * p
            lp_new, grad_new = _log_prob_and_grad(target, z_new)
            p = p + (step if i < steps - 1 else 0.5 * step) * grad_new
        delta = -lp_new + 0.5 * (inv_mass * p * p).sum(-1) - energy
        delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
        accept_prob = torch.exp(-delta.clamp(min=0))
        accept = torch.rand(lp.shape, generator=generator, **options) < accept_prob
        keep = accept.unsqueeze(-1)
        z, lp, grad = torch.where(keep, z_new, z), torch.where(accept, lp_new, lp), torch.where(keep, grad_new, grad)
        return z, lp, grad, accept_prob, energy, delta > MAX_ENERGY_ERROR

    def reasonable_step_size(eps: Tensor) -> Tensor:
        """Double or halve ε_b until one leapfrog step's mean acceptance crosses 1/2 (Hoffman & Gelman, Alg. 4)."""

        def acceptance(e: Tensor) -> Tensor:
            return transition(z, lp, grad, e.expand(num_chains, -1), 1)[3].mean(0)

        factor = torch.where(acceptance(eps) > 0.5, 2.0, 0.5).to(**options)
        active = torch.ones(num_targets, dtype=torch.bool, device=init.device)
        for _ in range(60):
            candidate = torch.where(active, eps * factor, eps)
            rate = acceptance(candidate)
            crossed = torch.where(factor > 1, rate <= 0.5, rate >= 0.5)
            eps = torch.where(active & ~crossed, candidate, eps)
            active &= ~crossed
            if not bool(active.any()):
                break
        return eps

    eps = torch.full((num_targets,), float(step_size), **options)
    if adapt_step_size and num_warmup:
        eps = reasonable_step_size(eps)
    averaging = _step_size_averaging(eps)
    window_ends = dict(adaptation_windows(num_warmup)) if mass == "diag" else {}
    window, window_end = None, -1

    draws = torch.empty(num_samples, num_chains, num_targets, dim, **options)
    names = ("accept_prob", "step_size", "energy", "lp")
    stats = {k: torch.empty(num_samples, num_chains, num_targets, **options) for k in names}
    stats["diverging"] = torch.empty(num_samples, num_chains, num_targets, dtype=torch.bool, device=init.device)
    for t in range(num_warmup + num_samples):
        jittered = eps * (1 + jitter * (2 * torch.rand(lp.shape, generator=generator, **options) - 1))
        z, lp, grad, accept_prob, energy, diverging = transition(z, lp, grad, jittered, num_leapfrog)
        if t >= num_warmup:
            i = t - num_warmup
            draws[i] = z
            for name, value in zip(names, (accept_prob, jittered, energy, lp)):
                stats[name][i] = value
            stats["diverging"][i] = diverging
            continue
        if adapt_step_size:
            averaging.step(target_accept - accept_prob.mean(0))
            eps = averaging.get_state()[0].exp()
        if t in window_ends:
            window, window_end = WelfordCovariance(diagonal=True), window_ends[t]
        if window is not None:
            _pooled_variance(window, z)
            if t == window_end - 1:
                inv_mass, window = window.get_covariance(regularize=True), None
                if adapt_step_size:
                    eps = reasonable_step_size(eps)
                    averaging = _step_size_averaging(eps)
        if t == num_warmup - 1 and adapt_step_size:
            eps = averaging.get_state()[1].exp()
    stats["n_steps"] = torch.full((num_samples, num_chains, num_targets), num_leapfrog, device=init.device)
    _warn_divergences("batched_hmc", stats["diverging"])
    return draws, stats


class _DrawStatsMixin:
    """Records per-draw statistics of the post-warm-up transitions of a Pyro HMC-family kernel.

    ``draw_stats`` holds one dict of lists per chain run (``setup`` starts one): ``accept_prob``, ``step_size``,
    ``energy`` (H after momentum resampling), ``lp`` (log π of the draw), ``diverging``, ``n_steps`` (leapfrog
    steps) and, for NUTS, ``tree_depth`` (trajectory doublings). Pyro keeps only running means and divergence
    indices; the acceptance probability of draw n is recovered exactly from its running mean,
    a_n = ā_{n−1} + n (ā_n − ā_{n−1}). Relies on Pyro 1.9's kernel attributes (``_t``, ``_warmup_steps``,
    ``_mean_accept_prob``, ``_divergences``, ``_potential_energy_last``).
    """

    stat_names = ("accept_prob", "step_size", "energy", "lp", "diverging", "n_steps")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.draw_stats: list[dict[str, list]] = []

    def setup(self, warmup_steps, *args, **kwargs):
        self.draw_stats.append({name: [] for name in self.stat_names})
        return super().setup(warmup_steps, *args, **kwargs)

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self._start_energy = float(self._kinetic_energy(r_unscaled) + self._potential_energy_last)
        return r, r_unscaled

    def _transition_stats(self) -> dict[str, float]:
        return {"n_steps": self.num_steps}

    def sample(self, params):
        mean_before, divergences_before = self._mean_accept_prob, len(self._divergences)
        params = super().sample(params)
        n = self._t - self._warmup_steps
        if n >= 1:
            accept_prob = mean_before + n * (self._mean_accept_prob - mean_before)
            record = {
                "accept_prob": min(max(accept_prob, 0.0), 1.0),
                "step_size": float(self.step_size),
                "energy": self._start_energy,
                "lp": -float(self._potential_energy_last),
                "diverging": len(self._divergences) > divergences_before,
                **self._transition_stats(),
            }
            for name, value in record.items():
                self.draw_stats[-1][name].append(value)
        return params


class RecordingHMC(_DrawStatsMixin, HMC):
    """Pyro's HMC kernel that also records per-draw statistics (``draw_stats``)."""


class RecordingNUTS(_DrawStatsMixin, NUTS):
    """Pyro's NUTS kernel that also records per-draw statistics, with ``n_steps`` and ``tree_depth``."""

    stat_names = _DrawStatsMixin.stat_names + ("tree_depth",)

    def sample(self, params):
        self._leapfrogs, self._doublings, self._nesting = 0, 0, 0
        return super().sample(params)

    def _transition_stats(self) -> dict[str, float]:
        return {"n_steps": self._leapfrogs, "tree_depth": self._doublings}

    def _build_basetree(self, *args, **kwargs):
        self._leapfrogs += 1
        return super()._build_basetree(*args, **kwargs)

    def _build_tree(self, *args, **kwargs):
        self._nesting += 1
        self._doublings += self._nesting == 1
        try:
            return super()._build_tree(*args, **kwargs)
        finally:
            self._nesting -= 1


@dataclass
class PyroMCMCResult:
    """Draws ``samples (C, N, D)`` of one target, per-draw ``stats`` ``(C, N)`` and the Pyro runs (one per chain)."""

    samples: Tensor
    stats: dict[str, Tensor]
    runs: list[MCMC]

    def to_inference_data(self):
        """ArviZ InferenceData with the posterior draws by chain and the sample statistics."""
        return mcmc_to_inference_data(self.samples, self.stats)


KERNELS = {"nuts": RecordingNUTS, "hmc": RecordingHMC}


def nuts_subset_posterior(
    target: SubsetTarget,
    num_samples: int,
    num_warmup: int,
    num_chains: int = 4,
    init: Tensor | None = None,
    seed: int | None = None,
    index: int = 0,
    kernel: str = "nuts",
    step_size: float = 1.0,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    num_steps: int = 10,
) -> PyroMCMCResult:
    r"""Sample target ``index`` of ``target`` with Pyro's NUTS (or HMC), one chain after another on its device.

    The potential is U(z) = −log π_S(z) of that target (``target.select(index)``); each chain has its own
    kernel with step-size (dual averaging, ``target_accept_prob``) and diagonal mass adaptation over
    ``num_warmup`` iterations. ``init`` ``(num_chains, D)`` defaults to draws of random members of S
    (``init_from_members``). ``seed`` fixes the run without touching the caller's generator state.
    Divergent post-warm-up transitions are kept, flagged in ``stats['diverging']`` and warned about.
    """
    if num_samples < 1:
        raise ValueError(f"NUTS needs num_samples >= 1, got {num_samples}")
    if num_chains < 1 or num_warmup < 0:
        raise ValueError(f"need num_chains >= 1 and num_warmup >= 0, got {num_chains}, {num_warmup}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    with seeded(seed):
        if init is None:
            init = target.init_from_members(num_chains)[:, index]
        if init.shape[0] != num_chains or init.ndim != 2:
            raise ValueError(f"init must have shape ({num_chains}, D), got {tuple(init.shape)}")
        single = target.select(index)
        single.check_finite(init)

        def potential(params: dict[str, Tensor]) -> Tensor:
            return -single(params["z"])

        options = {"step_size": step_size, "adapt_step_size": adapt_step_size}
        options.update(adapt_mass_matrix=adapt_mass_matrix, target_accept_prob=target_accept_prob)
        if kernel == "nuts":
            options["max_tree_depth"] = max_tree_depth
        else:
            options["num_steps"] = num_steps
        runs = []
        for chain in range(num_chains):
            mcmc = MCMC(
                KERNELS[kernel](potential_fn=potential, **options),
                num_samples=num_samples,
                warmup_steps=num_warmup,
                initial_params={"z": init[chain].detach()},
                disable_progbar=True,
            )
            mcmc.run()
            runs.append(mcmc)
    samples = torch.cat([run.get_samples(group_by_chain=True)["z"] for run in runs])
    stats = {}
    for name in runs[0].kernel.stat_names:
        values = [run.kernel.draw_stats[-1][name] for run in runs]
        stats[name] = torch.tensor(values, dtype=samples.dtype if isinstance(values[0][0], float) else None)
    _warn_divergences(f"Pyro {kernel.upper()}", stats["diverging"])
    return PyroMCMCResult(samples, stats, runs)


def reference_hmc(
    log_target: LogDensity,
    init: Tensor,
    mcmc_steps: int = 100,
    n_lf: int = 10,
    eps: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""MultiVae's JNF subset sampler (docs/objectives.md): returns the final state of each chain.

    ``init`` ``(..., D)`` holds one chain per row (MultiVae: a draw of a random member's base Gaussian).
    ``mcmc_steps`` times: ρ ~ N(0, I), H₀ = −log π(z) + ½‖ρ‖², ``n_lf`` leapfrog steps of size ``eps`` with
    the gradient recomputed after each position update, H = −log π(z') + ½‖ρ'‖², accept with probability
    min(1, exp(H₀ − H)). Identity mass, no adaptation, no warm-up, no divergence check. ``log_target`` is
    called mcmc_steps·(n_lf + 1) times, as in the reference (which re-runs the encoders at each call).
    """
    z = init.detach().clone()
    for _ in range(mcmc_steps):
        lp, grad = _log_prob_and_grad(log_target, z)
        rho = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        h0 = -lp + 0.5 * (rho * rho).sum(-1)
        z_new = z
        for _ in range(n_lf):
            rho = rho + 0.5 * eps * grad
            z_new = z_new + eps * rho
            lp, grad = _log_prob_and_grad(log_target, z_new)
            rho = rho + 0.5 * eps * grad
        h = -lp + 0.5 * (rho * rho).sum(-1)
        u = torch.rand(h.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = torch.where((u < torch.exp(h0 - h)).unsqueeze(-1), z_new, z)
    return z
