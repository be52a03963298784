"""A Gaussian-mixture latent sampler fitted by EM (scikit-learn) on training latents."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor


class GaussianMixtureSampler:
    r"""p(z) = Σ_k π_k N(z; μ_k, Σ_k), fitted by EM on training latents (N, D) for unconditional generation.

    The fitted parameters are plain tensors (``state()``/``from_state``), so a sampler is saved and loaded
    without pickling.
    """

    def __init__(self, num_components: int = 10, covariance_type: str = "full", seed: int = 0) -> None:
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_components, self.covariance_type, self.seed = int(num_components), covariance_type, int(seed)
        self.weights: Tensor | None = None
        self.means: Tensor | None = None
        self.covariances: Tensor | None = None

    def fit(self, latents: Tensor) -> "GaussianMixtureSampler":
        """EM on ``latents`` (N, D); stores π (K,), μ (K, D), Σ (K, D, D)."""
        if latents.ndim != 2 or not bool(torch.isfinite(latents).all()):
            raise ValueError(f"latents must be a finite (N, D) matrix, got shape {tuple(latents.shape)}")
        mixture = GaussianMixture(self.num_components, covariance_type=self.covariance_type, random_state=self.seed)
        mixture.fit(latents.detach().cpu().double().numpy())
        covariances = mixture.covariances_
        d = latents.shape[1]
        if self.covariance_type == "diag":
            covariances = np.stack([np.diag(c) for c in covariances])
        elif self.covariance_type == "spherical":
            covariances = np.stack([c * np.eye(d) for c in covariances])
        elif self.covariance_type == "tied":
            covariances = np.broadcast_to(covariances, (self.num_components, d, d))
        self.weights = torch.as_tensor(mixture.weights_, dtype=torch.float64)
        self.means = torch.as_tensor(mixture.means_, dtype=torch.float64)
        self.covariances = torch.as_tensor(np.ascontiguousarray(covariances), dtype=torch.float64)
        return self

    def distribution(self) -> torch.distributions.MixtureSameFamily:
        if self.weights is None:
            raise RuntimeError("GaussianMixtureSampler is not fitted: call fit(latents) first")
        components = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=self.weights), components)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), float32, shape (n, D)."""
        if generator is None:
            return self.distribution().sample((n,)).float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            return self.distribution().sample((n,)).float()

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = logsumexp_k [log π_k + log N(z; μ_k, Σ_k)]."""
        return self.distribution().log_prob(z.double()).to(z.dtype)

    def state(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], seed: int = 0) -> "GaussianMixtureSampler":
        sampler = cls(num_components=state["weights"].shape[0], seed=seed)
        sampler.weights, sampler.means, sampler.covariances = state["weights"], state["means"], state["covariances"]
        return sampler
