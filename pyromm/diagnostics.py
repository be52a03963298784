r"""ArviZ diagnostics of subset-posterior samplers and guides.

Every sampler's output becomes an ``arviz.InferenceData`` built with ``az.from_dict``: a ``posterior`` group
(draws by chain) and a ``sample_stats`` group with ArviZ's names (``diverging``, ``step_size``, ``tree_depth``
or ``n_steps``, ``energy``, ``acceptance_rate``, ``lp``), so ``az.summary`` (r̂, ESS), ``az.plot_trace``,
``az.plot_energy`` and ``az.plot_rank`` work on it. Guide draws and the PSIS k̂ of a guide against a subset
target become InferenceData too; ``save`` (atomic) and ``load`` go through netCDF.

ArviZ 0.23 emits a FutureWarning about its 1.0 refactor when imported; pyromm silences it inside its own
functions only (``warnings.catch_warnings``) and uses only APIs that the refactor keeps, but for ArviZ's PSIS
(``psislw``), which the refactor moves: ``_psislw`` is its only call site and names its new home.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

ARVIZ_NAMES = {"accept_prob": "acceptance_rate"}

ArrayLike = Union["Tensor", np.ndarray]


@contextmanager
def _arviz() -> Iterator:
    """The arviz module, with its FutureWarnings silenced for the duration of the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

        yield arviz


def _numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy array of a tensor (any device) or array-like."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def mcmc_to_inference_data(
    samples: ArrayLike | Mapping[str, ArrayLike],
    sample_stats: Mapping[str, ArrayLike] | None = None,
    var_name: str = "z",
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence] | None = None,
    attrs: Mapping | None = None,
):
    """InferenceData from draws ``(chains, draws, *shape)`` (an array or a dict of them) and per-draw statistics.

    ``sample_stats`` values have shape ``(chains, draws, ...)``; ``accept_prob`` is renamed ArviZ's
    ``acceptance_rate``. An array of draws ``(C, N, D)`` is named ``var_name`` with dimension ``z_dim``.
    """
    if not isinstance(samples, Mapping):
        samples = {var_name: samples}
        if dims is None and _numpy(samples[var_name]).ndim == 3:
            dims = {var_name: ["z_dim"]}
    posterior = {name: _numpy(value) for name, value in samples.items()}
    stats = {ARVIZ_NAMES.get(k, k): _numpy(v) for k, v in (sample_stats or {}).items()}
    leading = {value.shape[:2] for value in [*posterior.values(), *stats.values()]}
    if len(leading) != 1 or any(value.ndim < 2 for value in [*posterior.values(), *stats.values()]):
        raise ValueError(f"draws and statistics must share their leading (chains, draws) shape; got {leading}")
    with _arviz() as az:
        return az.from_dict(posterior=posterior, sample_stats=stats or None, dims=dims, coords=coords, attrs=attrs)


def from_batched_hmc(samples: ArrayLike, stats: Mapping[str, ArrayLike], target: int | None = None):
    """InferenceData of ``batched_hmc`` output (draws ``(N, C, B, D)``, statistics ``(N, C, B)``).

    ``target=b`` keeps target b (what ``az.plot_energy`` needs); ``None`` keeps all with a ``target`` dimension.
    """
    draws = np.moveaxis(_numpy(samples), 0, 1)
    stats = {k: np.moveaxis(_numpy(v), 0, 1) for k, v in stats.items()}
    if target is not None:
        return mcmc_to_inference_data(draws[:, :, target], {k: v[:, :, target] for k, v in stats.items()})
    dims = {"z": ["target", "z_dim"], **{ARVIZ_NAMES.get(k, k): ["target"] for k in stats}}
    return mcmc_to_inference_data(draws, stats, dims=dims)


def from_pyro_mcmc(mcmc):
    """InferenceData of a Pyro ``MCMC`` run (or a list of single-chain runs, stacked as chains).

    With pyromm's ``RecordingNUTS``/``RecordingHMC`` kernels, every per-draw statistic is included. Pyro's own
    kernels keep only divergence indices per chain (``mcmc.diagnostics()``): then ``sample_stats`` holds just
    ``diverging`` and a warning says so. Chains run in worker processes lose the kernel's records likewise.
    """
    runs = list(mcmc) if isinstance(mcmc, Sequence) else [mcmc]
    posterior: dict[str, list[np.ndarray]] = {}
    stats: dict[str, list[np.ndarray]] = {}
    missing = False
    for run in runs:
        for name, value in run.get_samples(group_by_chain=True).items():
            posterior.setdefault(name, []).append(_numpy(value))
        records = getattr(run.kernel, "draw_stats", [])[-run.num_chains :]
        if len(records) == run.num_chains and all(len(r["diverging"]) == run.num_samples for r in records):
            for name in records[0]:
                stats.setdefault(name, []).append(np.array([r[name] for r in records]))
            continue
        missing = True
        diverging = np.zeros((run.num_chains, run.num_samples), dtype=bool)
        for chain, indices in enumerate(run.diagnostics()["divergences"].values()):
            diverging[chain, list(indices)] = True
        stats.setdefault("diverging", []).append(diverging)
    if missing:
        warnings.warn(
            "from_pyro_mcmc: this Pyro kernel records no per-draw statistics besides divergences; use "
            "pyromm.infer.hmc.RecordingNUTS/RecordingHMC (in the main process) for the others",
            stacklevel=2,
        )
        stats = {"diverging": stats["diverging"]}
    samples = {name: np.concatenate(values) for name, values in posterior.items()}
    stats = {name: np.concatenate(values) for name, values in stats.items()}
    dims = {name: ["z_dim"] for name, value in samples.items() if value.ndim == 3}
    return mcmc_to_inference_data(samples, stats, dims=dims)


def guide_to_inference_data(draws: ArrayLike | Mapping[str, ArrayLike], chains: bool = False, var_name: str = "z"):
    """InferenceData (``posterior`` only) of guide draws ``(N, *shape)``, or ``(C, N, *shape)`` with ``chains``."""
    if not isinstance(draws, Mapping):
        draws = {var_name: draws}
    draws = {name: _numpy(value) if chains else _numpy(value)[None] for name, value in draws.items()}
    dims = {name: ["z_dim"] for name, value in draws.items() if value.ndim == 3}
    return mcmc_to_inference_data(draws, dims=dims)


def _psislw(log_weights: np.ndarray, r_eff: float) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's PSIS along the last axis: smoothed, normalised log weights and k̂ per leading index.

    The one call of ArviZ's PSIS in pyromm. ArviZ 1.0 moves it to ``arviz_stats.base.array_stats.psislw``,
    which takes the negated log weights (it smooths −log-likelihoods) and names the efficiency ``r_eff``.
    """
    with _arviz() as az:
        smoothed, khat = az.psislw(log_weights, reff=r_eff)
    return np.asarray(smoothed), np.asarray(khat, dtype=float)


def _pareto_smooth_rows(log_weights: np.ndarray, r_eff: float) -> tuple[np.ndarray, np.ndarray]:
    """``pareto_smooth`` of each row of ``(B, S)`` log weights; rows of constant weights give k̂ = −inf."""
    lw = np.asarray(log_weights, dtype=float)
    constant = np.ptp(lw, axis=-1) <= 1e-9
    smoothed = np.full(lw.shape, -math.log(lw.shape[-1]))
    khat = np.full(lw.shape[:-1], -math.inf)
    if not constant.all():
        smoothed[~constant], khat[~constant] = _psislw(lw[~constant], r_eff)
    return smoothed, khat


def pareto_smooth(log_weights: ArrayLike, r_eff: float = 1.0) -> tuple[np.ndarray, float]:
    r"""Pareto-smoothed, normalised log importance weights of S draws and the tail shape k̂ (Vehtari et al. 2024).

    ArviZ's ``psislw``: the M = ⌈min(S/5, 3√(S/r_eff))⌉ largest weights are replaced by the quantiles of a
    generalised Pareto fit to their exceedances over the next largest weight, truncated at the largest raw
    weight. k̂ = inf when at most 4 weights exceed that cutoff. Constant weights (spread ≤ 1e-9: a guide
    proportional to the target, where ArviZ would report k̂ = inf) give k̂ = −inf and uniform weights.
    """
    smoothed, khat = _pareto_smooth_rows(_numpy(log_weights)[None], r_eff)
    return smoothed[0], float(khat[0])


def psis_khat(
    log_target: ArrayLike, log_guide: ArrayLike, draws: ArrayLike | None = None, r_eff: float = 1.0
) -> tuple[np.ndarray, object]:
    r"""PSIS k̂ of a guide g against a subset target π_S from S guide draws z_s ~ g.

    ``log_target`` and ``log_guide`` are log π_S(z_s) and log g(z_s), shape ``(S,)`` or ``(S, B)`` for B
    targets; the log weights are log w_s = log π_S(z_s) − log g(z_s). k̂ < 0.5: the guide is reliable for
    importance sampling; 0.5–0.7: usable; > 0.7: the guide misses mass of the target. Returns k̂ (shape ``()``
    or ``(B,)``) and an InferenceData: ``posterior`` (the draws, when given, shape ``(S, [B,] D)``),
    ``sample_stats`` with ``log_weight`` (raw) and ``psis_log_weight`` (smoothed, normalised), and the k̂
    values in the attribute ``pareto_k``.
    """
    raw = _numpy(log_target).astype(float) - _numpy(log_guide).astype(float)
    smoothed, khat = _pareto_smooth_rows(raw.reshape(raw.shape[0], -1).T, r_eff)
    khat = khat.reshape(raw.shape[1:])
    stats = {"log_weight": raw[None], "psis_log_weight": smoothed.T.reshape(raw.shape)[None]}
    batched = raw.ndim == 2
    dims = {name: ["target"] for name in stats} if batched else {}
    attrs = {"pareto_k": khat.ravel().tolist()}
    if draws is None:
        with _arviz() as az:
            return khat, az.from_dict(sample_stats=stats, dims=dims, attrs=attrs)
    dims["z"] = ["target", "z_dim"] if batched else ["z_dim"]
    return khat, mcmc_to_inference_data(_numpy(draws)[None], stats, dims=dims, attrs=attrs)


def save(idata, path: str | Path) -> Path:
    """Write InferenceData to a netCDF file atomically (a temporary file beside it, fsync, rename); returns the path.

    Readers see the old file or the complete new one; on error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _arviz():
            idata.to_netcdf(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path):
    """InferenceData read back from a netCDF file written by ``save``."""
    with _arviz() as az:
        return az.from_netcdf(str(path))
