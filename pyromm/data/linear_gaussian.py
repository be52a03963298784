"""A linear-Gaussian multimodal model with exact posteriors and marginal likelihoods, for tests.

z ~ N(0, I_D) and, for every modality m, x_m = A_m z + b_m + eps_m with eps_m ~ N(0, sigma_m^2 I).
Given the modalities S, p(z | x_S) = N(mu, Sigma) with
Sigma^-1 = I + sum_m A_m^T A_m / sigma_m^2 and mu = Sigma sum_m A_m^T (x_m - b_m) / sigma_m^2.
Computations are in float64.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor

from pyromm.data.dataset import MultimodalDataset

_LOG_2PI = math.log(2.0 * math.pi)


class LinearGaussianMultimodal:
    """The model above with seeded A_m ~ N(0, 1/D) entrywise and b_m ~ N(0, 1) entrywise.

    ``dims`` maps modality names to dimensions d_m; ``noise`` is the noise standard deviation sigma_m,
    one float for every modality or a mapping per modality.
    """

    def __init__(
        self,
        latent_dim: int,
        dims: Mapping[str, int],
        noise: Mapping[str, float] | float = 0.1,
        seed: int = 0,
    ) -> None:
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if not dims or any(d < 1 for d in dims.values()):
            raise ValueError(f"dims must map at least one modality to a dimension >= 1, got {dict(dims)}")
        if isinstance(noise, Mapping):
            missing = [m for m in dims if m not in noise]
            if missing:
                raise ValueError(f"noise has no scale for modalities {missing}")
            scales = {m: float(noise[m]) for m in dims}
        else:
            scales = {m: float(noise) for m in dims}
        if any(s <= 0 for s in scales.values()):
            raise ValueError(f"noise scales must be > 0, got {scales}")
        self.latent_dim = latent_dim
        self.dims = dict(dims)
        self.noise = scales
        generator = torch.Generator().manual_seed(seed)
        self.weights = {
            m: torch.randn(d, latent_dim, generator=generator, dtype=torch.float64) / math.sqrt(latent_dim)
            for m, d in self.dims.items()
        }
        self.biases = {m: torch.randn(d, generator=generator, dtype=torch.float64) for m, d in self.dims.items()}

    @property
    def modality_names(self) -> list[str]:
        return list(self.dims)

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_latent: bool = False
    ) -> MultimodalDataset | tuple[MultimodalDataset, Tensor]:
        """``n`` samples as a float32 dataset of (d_m,) modalities; with ``return_latent`` also z (n, D) float64."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        data = {}
        for m in self.dims:
            eps = torch.randn(n, self.dims[m], generator=generator, dtype=torch.float64)
            data[m] = (z @ self.weights[m].T + self.biases[m] + self.noise[m] * eps).float()
        metadata = {"dataset": "linear-Gaussian", "latent_dim": self.latent_dim, "dims": dict(self.dims),
                    "noise": dict(self.noise)}
        dataset = MultimodalDataset(data, metadata=metadata)
        return (dataset, z) if return_latent else dataset

    def _observed(self, data: Mapping[str, Tensor], subset: Iterable[str] | None) -> tuple[list[str], int]:
        names = [m for m in data if m in self.dims] if subset is None else list(subset)
        for m in names:
            if m not in self.dims:
                raise KeyError(f"unknown modality {m!r}; the model has {self.modality_names}")
            if m not in data:
                raise KeyError(f"subset names modality {m!r}, which is not in the data ({list(data)})")
        if not data:
            raise ValueError("data holds no modality")
        n = next(iter(data.values())).shape[0]
        for m in names:
            if tuple(data[m].shape) != (n, self.dims[m]):
                raise ValueError(f"modality {m!r} has shape {tuple(data[m].shape)}, expected ({n}, {self.dims[m]})")
        return names, n

    def _precision_cholesky(self, names: list[str]) -> Tensor:
        precision = torch.eye(self.latent_dim, dtype=torch.float64)
        for m in names:
            precision = precision + self.weights[m].T @ self.weights[m] / self.noise[m] ** 2
        return torch.linalg.cholesky(precision)

    def posterior(self, data: Mapping[str, Tensor], subset: Iterable[str] | None = None) -> tuple[Tensor, Tensor]:
        """Exact p(z | x_S) as (mean (N, D), covariance (D, D)), float64; S = ``subset`` or every
        modality in ``data`` (the empty subset gives the prior)."""
        names, n = self._observed(data, subset)
        chol = self._precision_cholesky(names)
        cov = torch.cholesky_inverse(chol)
        info = torch.zeros(n, self.latent_dim, dtype=torch.float64)
        for m in names:
            residual = data[m].to(torch.float64) - self.biases[m]
            info = info + residual @ self.weights[m] / self.noise[m] ** 2
        return info @ cov, cov

    def log_likelihood(self, name: str, z: Tensor, x: Tensor) -> Tensor:
        """log p(x_name | z) summed over the d_m dimensions: z (*, N, D), x (N, d_m) -> (*, N), float64."""
        if name not in self.dims:
            raise KeyError(f"unknown modality {name!r}; the model has {self.modality_names}")
        mean = z.to(torch.float64) @ self.weights[name].T + self.biases[name]
        sigma = self.noise[name]
        sq = (((x.to(torch.float64) - mean) / sigma) ** 2).sum(-1)
        return -0.5 * sq - self.dims[name] * (math.log(sigma) + 0.5 * _LOG_2PI)

    def log_marginal(self, data: Mapping[str, Tensor], subset: Iterable[str] | None = None) -> Tensor:
        """Exact log p(x_S) per sample, (N,) float64, from Bayes' rule evaluated at the posterior mean:
        log p(x_S) = sum_m log p(x_m | mu) + log p(mu) - log p(mu | x_S)."""
        names, _ = self._observed(data, subset)
        chol = self._precision_cholesky(names)
        mean, _ = self.posterior(data, names)
        total = -0.5 * (mean**2).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        total = total - (torch.log(torch.diagonal(chol)).sum() - 0.5 * self.latent_dim * _LOG_2PI)
        for m in names:
            total = total + self.log_likelihood(m, mean, data[m])
        return total
