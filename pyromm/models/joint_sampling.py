r"""Unconditional generation of every built-in model, ``model.sample(n)``, and the evaluation contexts it shares.

``model.sample(n)`` draws n joint latents (one per row) and decodes every modality from its row:

    (z_{j,1}, …, z_{j,M}) ~ p(Z),   x̂_{j,m} = E[p(x_m | z_{j,m})],   j = 1..n,

where z_{j,m} is the latent decoder m takes (``joint_latents``): the one shared z_j ~ p(z) for every decoder of a
model with an unconditional prior (``sample_prior``), or slice m of one draw [z_1; …; z_M] of a latent sampler
fitted on training latents for a model without one (the MMVM VAE, independent VAEs). x̂ is the decoder
distribution's mean (``distribution_mean``: the most probable class for categorical likelihoods), which is what
the evaluation's joint coherence scores; draw x ~ p(x_m | z) yourself from ``model.decode(m, z)`` for samples
with the likelihood's noise.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, OneHotCategorical


class LatentSampler(Protocol):
    """A fitted unconditional latent distribution: ``sample(n)`` draws ``(n, L)`` (global RNG)."""

    def sample(self, n: int) -> Tensor: ...


class NoLatentSamplerError(RuntimeError):
    """``sample()`` of a model that generates through a fitted latent sampler, with none attached."""


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad`` for the duration; the previous train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextmanager
def seeded(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Draw the global RNG from a seed taken from ``generator`` (no-op when None); the global state is restored."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def distribution_mean(d: Distribution) -> Tensor:
    """E[x] of a likelihood distribution; for (one-hot) categoricals the most probable class instead."""
    base = d
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, Categorical):
        return base.logits.argmax(-1)
    if isinstance(base, OneHotCategorical):
        return nn.functional.one_hot(base.logits.argmax(-1), base.logits.shape[-1]).to(base.logits.dtype)
    return d.mean


class JointSampling:
    """``sample(n)`` for a model with ``decode``, ``modality_names``, ``device`` and ``joint_latents(n)``: the latent
    ``(n, D_m)`` each decoder m takes, one joint draw per row, from the global RNG."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """x̂_{j,m} = E[p(x_m | z_{j,m})] for every modality m, j = 1..n, from n joint latent draws (module
        docstring): ``{m: (n, *event_shape_m)}`` on the model's device, in eval mode and without gradients (the
        train/eval mode is restored). ``generator`` seeds the draws (the global RNG is left untouched); without
        it the global RNG draws. Categorical modalities give the most probable class."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sample(n) needs a number of samples n >= 1, got {n!r}")
        with evaluating(self), seeded(generator, self.device):
            latents = self.joint_latents(n)
            return {name: distribution_mean(self.decode(name, latents[name])) for name in self.modality_names}
