r"""MMVAE+ (Palumbo et al. 2023): shared and private latents per modality, a mixture of the shared posteriors,
and a stratified bound in which cross-modal reconstructions take their private latent from an auxiliary prior.

Latents: modality m has a shared part z_m (``shared_dim`` = D_z) and a private part w_m (``private_dim`` = D_w).

* Encoders return ``(loc, second)``, each of size D_z + D_w: the **first D_z entries parameterise the shared
  z, the remaining D_w the private w**. The posteriors are Laplace with the scale constraint applied to each
  block separately: q_m(z | x_m) = Laplace(loc_z, softmax(second_z)·D_z + 1e-6),
  q_m(w | x_m) = Laplace(loc_w, softmax(second_w)·D_w + 1e-6).
* Decoders take **u = [w, z]** (private first, then shared; size D_w + D_z), as the official code.
* p(u) = Laplace(0, 1) on every dimension, fixed.
* Auxiliary private priors r_m(w) = Laplace(0, softmax(ℓ_m)·D_w), ℓ_m = 0 at start (unit scales), learnt iff
  ``learn_private_prior``. They only supply the private latent of cross-modal reconstruction in training; no
  density of r_m enters the objective, so ℓ_m learns through the reparameterised cross-reconstructions.

The programs hold one stratum per source modality r (sites with ``infer={"stratum": r}``, masked where x_r is
missing). Guide: ``z@r`` ~ q_r(z | x_r) scored by the mixture q(z | X) = 1/|O| Σ_{m∈O} q_m(z | x_m) (a
:class:`~pyromm.distributions.MixtureStratum`), ``w@r`` ~ q_r(w | x_r), both scaled by β. Model: ``z@r`` and
``w@r`` ~ Laplace(0, 1) scaled by β, and every observed x_d decoded from u_{r→d} (sites ``x_<d>@r``, scaled
by λ_d). With K draws per source the log-weights are

    lw_{r,k} = Σ_{d∈O} λ_d log p(x_d | u_{r→d,k})
               + β [log p(u_{r,k}) − log q(z_{r,k} | X) − log q_r(w_{r,k} | x_r)],

u_{r→r,k} = u_{r,k} = [w_{r,k}, z_{r,k}] (self-reconstruction) and u_{r→d,k} = [ŵ_{r→d,k}, z_{r,k}] with
ŵ ~ r_d (the target's auxiliary prior, rsample, drawn in the model without a site) for d ≠ r.
:class:`pyromm.infer.StratifiedIWAE` averages the per-source estimators over r ∈ O: ``(1, 'iwae')`` is the
single-sample ELBO, ``'dreg'`` the doubly reparameterised K-sample bound, with ``detach_guide=False`` for the
reference code's DReG (log q at the live parameters); see ``docs/objectives.md``. Draw order (what fixes the
noise): for each r, the K draws of z then of w; then for each r and each d ≠ r (in the order of
``batch.data``), the K·B draws ŵ_{r→d}.

Inference contract: ``encode`` gives the shared posteriors q_m(z | x_m) (their means are the representation),
``infer`` the mixture of the subset's shared posteriors, ``prior`` and ``sample_prior`` the shared block of
p(u). ``decode(name, z)`` accepts a shared latent (size D_z) and then prepends w ~ Laplace(0, 1), the w-block
of p(u) (the official test-time cross-generation rule, not the learnt r_name), drawn afresh per call; a full
u (size D_w + D_z) is decoded as given. ``sample(n)`` (unconditional generation, as joint coherence) therefore
decodes one shared z ~ p(z) per row with every decoder, each adding its own fresh w_m ~ Laplace(0, 1). Since
each modality's w is independent under p(u), the importance estimate of log p(X) from ``infer``, ``prior`` and
``decode`` stays unbiased (w is proposed from its prior).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.distributions.stratum import MixtureStratum
from pyromm.handlers import shared
from pyromm.models.base import observed_only, scaled
from pyromm.models.mmvae import laplace_mixture
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE


def unit_laplace(shape: Sequence[int], like: Tensor) -> dist.Independent:
    """Laplace(0, 1) with the last entry of ``shape`` as event dimension, on ``like``'s device and dtype."""
    zeros = torch.zeros(*shape, dtype=like.dtype, device=like.device)
    return dist.Laplace(zeros, torch.ones_like(zeros)).to_event(1)


class MMVAEPlus(SharedLatentVAE):
    r"""MMVAE+ with shared z (``shared_dim``) and private w (``private_dim``) per modality; see the module
    docstring for the encoder split (z first), the decoder input order ([w, z]) and the inference contract.

    ``model``/``guide`` are the stratified programs of the module docstring; train them with
    :class:`pyromm.infer.StratifiedIWAE`.
    """

    def __init__(
        self, modalities: Sequence[Modality], shared_dim: int, private_dim: int, learn_private_prior: bool = True
    ) -> None:
        if shared_dim < 1 or private_dim < 1:
            raise ValueError(f"shared_dim and private_dim must be >= 1, got {shared_dim} and {private_dim}")
        super().__init__(modalities, shared_dim + private_dim, aggregation=laplace_mixture, posterior="laplace")
        self.shared_dim, self.private_dim = int(shared_dim), int(private_dim)
        self.learn_private_prior = bool(learn_private_prior)
        self.private_prior_logits = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(private_dim), requires_grad=self.learn_private_prior) for n in self.modalities}
        )

    def encode_parts(self, batch: MultimodalBatch) -> dict[str, tuple[dist.Independent, dist.Independent]]:
        """(q_m(z | x_m), q_m(w | x_m)) for each modality in the batch, from the encoder's split outputs; run once
        per batch within one ELBO evaluation (:func:`pyromm.handlers.shared`)."""
        return shared("encode_parts", (self, batch), lambda: self._encode_parts(batch))

    def _encode_parts(self, batch: MultimodalBatch) -> dict[str, tuple[dist.Independent, dist.Independent]]:
        parts, s = {}, self.shared_dim
        for name, x in batch.data.items():
            loc, second = self.encoders[name](x)
            shared_part = self.posterior_of(loc[..., :s], second[..., :s])
            parts[name] = (shared_part, self.posterior_of(loc[..., s:], second[..., s:]))
        return parts

    def _encode(self, batch: MultimodalBatch) -> dict[str, dist.Independent]:
        """The shared posteriors q_m(z | x_m); their means are the latent representation."""
        return {name: q_z for name, (q_z, _) in self.encode_parts(batch).items()}

    def private_prior(self, name: str) -> dist.Independent:
        """r_name(w) = Laplace(0, softmax(ℓ_name)·D_w), the auxiliary prior of cross-reconstruction."""
        scale = torch.softmax(self.private_prior_logits[name], -1) * self.private_dim
        return dist.Laplace(torch.zeros_like(scale), scale).to_event(1)

    def prior(self, batch: MultimodalBatch) -> dist.Independent:
        """The shared block of p(u): Laplace(0, 1) over z for every sample of the batch."""
        zeros = torch.zeros(batch.batch_size, self.shared_dim, device=batch.device)
        return dist.Laplace(zeros, torch.ones_like(zeros)).to_event(1)

    def sample_prior(self, n: int) -> Tensor:
        """n shared draws z ~ Laplace(0, 1), shape ``(n, shared_dim)``; ``decode`` adds each modality's w."""
        like = next(self.parameters())
        return unit_laplace((n, self.shared_dim), like).sample()

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        """p(x_name | u) for u = [w, z] of shape ``(*sample, B, D_w + D_z)``, or for a shared z ``(*sample, B, D_z)``
        completed with a fresh w ~ Laplace(0, 1) (the w-block of p(u))."""
        if z.shape[-1] == self.shared_dim:
            w = unit_laplace((*z.shape[:-1], self.private_dim), z).sample()
            z = torch.cat([w, z], -1)
        elif z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"decode({name!r}) needs a latent of size {self.shared_dim} (shared) or {self.latent_dim} "
                f"(private + shared), got {tuple(z.shape)}"
            )
        return super().decode(name, z)

    def reconstruct(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        """p(x_m | [w_m, z_m]) for every modality, [w_m, z_m] ~ q_m(· | x_m) (self-reconstruction)."""
        out = {}
        for name, (q_z, q_w) in self.encode_parts(batch).items():
            out[name] = self.decode(name, torch.cat([q_w.sample(), q_z.sample()], -1))
        return out

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per source r (stratum r, masked where x_r is missing): z@r, w@r ~ Laplace(0, 1) scaled by β;
        x_d@r ~ p(x_d | u_{r→d}) for every d, scaled by λ_d and masked where x_d is missing."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        like = self.private_prior_logits[next(iter(batch.data))]
        prior_z, prior_w = unit_laplace((self.shared_dim,), like), unit_laplace((self.private_dim,), like)
        auxiliary = {d: self.private_prior(d) for d in batch.data}
        with pyro.plate("data", batch.batch_size):
            for r in batch.data:
                stratum = {"stratum": r}
                with observed_only(batch.observed(r)):
                    with scaled(beta):
                        z = pyro.sample(f"z@{r}", prior_z, infer=dict(stratum))
                        w = pyro.sample(f"w@{r}", prior_w, infer=dict(stratum))
                    for d, x in batch.data.items():
                        private = w if d == r else auxiliary[d].rsample(z.shape[:-1])
                        with observed_only(batch.observed(d)), scaled(self.modalities[d].weight):
                            likelihood = self.decode(d, torch.cat([private, z], -1))
                            pyro.sample(f"x_{d}@{r}", likelihood, obs=x, infer=dict(stratum))

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per source r (stratum r, masked where x_r is missing), scaled by β: z@r ~ q_r(z | x_r) scored by the
        mixture q(z | X); w@r ~ q_r(w | x_r)."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        parts = self.encode_parts(batch)
        mixture = laplace_mixture({n: q_z for n, (q_z, _) in parts.items()}, batch.mask)
        with pyro.plate("data", batch.batch_size), scaled(beta):
            for r, (q_z, q_w) in parts.items():
                with observed_only(batch.observed(r)):
                    pyro.sample(f"z@{r}", MixtureStratum(mixture, q_z), infer={"stratum": r})
                    pyro.sample(f"w@{r}", q_w, infer={"stratum": r})

    def config(self) -> dict:
        return {
            **super().config(),
            "shared_dim": self.shared_dim,
            "private_dim": self.private_dim,
            "learn_private_prior": self.learn_private_prior,
        }
