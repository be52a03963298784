"""MVAE (Wu & Goodman 2018): a product of experts with a prior expert, trained on subsets of the modalities."""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import observed_only, scaled
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE


class MVAE(SharedLatentVAE):
    r"""q(z | X_S) = PoE(N(0, I), {q_m}_{m∈S}) and the subsampled objective as one program:

        ELBO(X) + Σ_m ELBO(x_m) + Σ_{j≤k} ELBO(X_{S_j}),  S_j drawn uniformly among the subsets of size 2..M−1,

    each subset's ELBO reconstructing only its own modalities. Sites: ``z@<S>`` and ``x_<m>@<S>`` per subset S
    (``<S>`` joins the names with '+'; the j-th random subset adds ``~j``), and the structural draw
    ``random_subsets``. A sample observing no modality of S leaves S's terms; the encoders run once.
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, num_random_subsets: int = 0) -> None:
        super().__init__(modalities, latent_dim, "poe_prior")
        if isinstance(num_random_subsets, bool) or num_random_subsets < 0:
            raise ValueError(f"num_random_subsets must be an integer >= 0, got {num_random_subsets!r}")
        self.num_random_subsets = int(num_random_subsets)

    def subsets(self, names: list[str]) -> list[tuple[str, list[str]]]:
        """(site suffix, subset): the full set, every singleton, then the random subsets (a structural site)."""
        chosen = [list(names)] + ([[n] for n in names] if len(names) > 1 else [])
        out = [("@" + "+".join(s), s) for s in chosen]
        middle = [list(c) for size in range(2, len(names)) for c in itertools.combinations(names, size)]
        if middle and self.num_random_subsets:
            uniform = dist.Categorical(logits=torch.zeros(len(middle))).expand([self.num_random_subsets])
            picks = pyro.sample("random_subsets", uniform.to_event(1), infer={"structural": True})
            out += [(f"@{'+'.join(middle[i])}~{j}", middle[i]) for j, i in enumerate(picks.tolist())]
        return out

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per subset S: z@S ~ N(0, I) scaled by β, x_m@S ~ p(x_m | z@S) for m ∈ S scaled by w_m."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        subsets = self.subsets(list(batch.data))
        with pyro.plate("data", batch.batch_size):
            for suffix, subset in subsets:
                with observed_only(subset_presence(batch, subset)[0]):
                    with scaled(beta):
                        z = pyro.sample(f"z{suffix}", self.prior(batch))
                    self.observe(batch, z, subset, suffix)

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per subset S: z@S ~ PoE(N(0, I), q_m for the observed m ∈ S), scaled by β."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        subsets = self.subsets(list(batch.data))
        with pyro.plate("data", batch.batch_size):
            for suffix, subset in subsets:
                present, mask = subset_presence(batch, subset)
                joint = self.joint(batch, subset) if mask is None else self.joint(batch, subset, mask=mask)
                with observed_only(present), scaled(beta):
                    pyro.sample(f"z{suffix}", joint)

    def config(self) -> dict:
        return {**super().config(), "num_random_subsets": self.num_random_subsets}


def subset_presence(batch: MultimodalBatch, names: Sequence[str]) -> tuple[Tensor | None, dict | None]:
    """(present, mask): present[b] = sample b observes some modality of ``names``; ``mask`` marks every modality of
    the subset observed for the samples that observe none (their aggregate is a placeholder, masked out). Both None
    without masks."""
    masks = {n: batch.observed(n) for n in names}
    known = [m for m in masks.values() if m is not None]
    if not known:
        return None, None
    present = torch.ones_like(known[0]) if len(known) < len(masks) else torch.stack(known).any(0)
    absent = ~present
    return present, {n: None if m is None else m | absent for n, m in masks.items()}
