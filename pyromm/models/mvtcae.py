"""MVTCAE (Hwang et al. 2021): a product of experts trained with the total-correlation objective."""
from __future__ import annotations

from typing import Mapping, Sequence

import pyro

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import observed_only, scaled
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE


class MVTCAE(SharedLatentVAE):
    r"""q(z | X) = PoE of the unimodal posteriors, and MVTCAE's objective as MultiVae computes it:

        (M − α)/M Σ_m w_m (−log p(x_m | z)) + β [ α/M Σ_m KL(q(z|X) ‖ q_m(z|x_m)) + (1 − α) KL(q(z|X) ‖ N(0, I)) ].

    Sites: ``z`` (prior and guide, scaled by β(1 − α)), ``z|<m>`` (q_m observed at z with
    ``infer={"rate_of": "z"}``, scaled by βα/M) and ``x_<m>`` (scaled by (M − α)/M · w_m). Train with
    ``RateELBO('analytic')``.
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, alpha: float = 0.1) -> None:
        super().__init__(modalities, latent_dim, "poe")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        m, alpha = len(self.modality_names), self.alpha
        self.register()
        posteriors = self.encode(batch)
        with pyro.plate("data", batch.batch_size):
            with scaled(beta * (1.0 - alpha)):
                z = pyro.sample("z", self.prior(batch))
            for name, q_m in posteriors.items():
                with observed_only(batch.observed(name)), scaled(beta * alpha / m):
                    pyro.sample(f"z|{name}", q_m, obs=z, infer={"rate_of": "z"})
            with scaled((m - alpha) / m):
                self.observe(batch, z, list(batch.data))

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        with pyro.plate("data", batch.batch_size), scaled(beta * (1.0 - self.alpha)):
            pyro.sample("z", self.joint(batch))

    def config(self) -> dict:
        return {**super().config(), "alpha": self.alpha}
