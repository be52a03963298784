r"""Masked autoregressive flows (nflows) as reparameterised Pyro distributions, and a MAF latent sampler.

A flow f maps a latent z to a base variable u = f(z) (nflows' ``forward`` direction, data → noise).
The pushed-forward density is, by the change of variables,

    log q(z) = log p_base(f(z)) + log |det ∂f(z)/∂z|,

and sampling inverts the flow: u ~ p_base, z = f^{-1}(u). JNF's unimodal posteriors use an encoder
Gaussian as p_base and an unconditional f_m; a context-conditioned flow f(z; c)
takes an embedding c of x_m into its MADE networks.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import pyro.distributions as dist
from pyro.distributions import constraints
from torch import Tensor, nn
from nflows.transforms import (
    CompositeTransform,
    MaskedAffineAutoregressiveTransform,
    Permutation,
    PointwiseAffineTransform,
    RandomPermutation,
    ReversePermutation,
    Transform,
)

PERMUTATIONS = ("reverse", "random")


class FlowConfigError(ValueError):
    """A flow whose dimension or context does not fit the latent it is used on."""


def maf(
    dim: int,
    num_blocks: int = 2,
    hidden_features: int = 128,
    num_hidden_layers: int = 3,
    context_features: int | None = None,
    permutation: str = "reverse",
    identity_init: bool = True,
) -> CompositeTransform:
    r"""A masked autoregressive flow z ↦ u on R^dim: ``num_blocks`` MADE affine layers with permutations.

    Each block is u_i = s_i(z_{<i}; c) z_i + t_i(z_{<i}; c), s = softplus(·) + 10⁻³, computed by a MADE with
    ``num_hidden_layers`` ReLU layers of ``hidden_features`` units (sequential degrees, no batch norm), the
    context c entering the first hidden layer when ``context_features`` is given. A permutation follows each
    block; the last one undoes the product of the others, so the permutations compose to the identity
    (with 2 blocks and ``'reverse'`` this is the reference's flip after each block).
    ``identity_init``: the last MADE layer has zero weights and biases giving s = 1, t = 0, so the flow starts
    as the identity map (up to float rounding) and sampling cannot blow up at initialisation.
    """
    if dim < 1 or num_blocks < 1 or hidden_features < 1 or num_hidden_layers < 1:
        raise FlowConfigError(
            f"maf needs dim, num_blocks, hidden_features, num_hidden_layers >= 1; got {dim}, {num_blocks}, "
            f"{hidden_features}, {num_hidden_layers}"
        )
    if permutation not in PERMUTATIONS:
        raise FlowConfigError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")
    if context_features is not None and context_features < 1:
        raise FlowConfigError(f"context_features must be >= 1 or None, got {context_features}")
    layers: list[Transform] = []
    order = torch.arange(dim)
    for block in range(num_blocks):
        layer = MaskedAffineAutoregressiveTransform(
            features=dim,
            hidden_features=hidden_features,
            context_features=context_features,
            num_blocks=num_hidden_layers - 1,
            use_residual_blocks=False,
        )
        if identity_init:
            _init_identity(layer)
        layers.append(layer)
        if block < num_blocks - 1:
            perm = ReversePermutation(dim) if permutation == "reverse" else RandomPermutation(dim)
            order = order[perm._permutation]
            layers.append(perm)
    if not torch.equal(order, torch.arange(dim)):
        layers.append(Permutation(torch.argsort(order)))
    return CompositeTransform(layers)


def _init_identity(layer: MaskedAffineAutoregressiveTransform) -> None:
    """Zero the MADE output weights; bias so that softplus(b) + ε = 1 (scale) and 0 (shift)."""
    final = layer.autoregressive_net.final_layer
    unit_scale = math.log(math.expm1(1.0 - layer._epsilon))
    with torch.no_grad():
        final.weight.zero_()
        final.bias.view(-1, 2)[:, 0] = unit_scale
        final.bias.view(-1, 2)[:, 1] = 0.0


def _leaves(transform: Transform) -> list[Transform]:
    if isinstance(transform, CompositeTransform):
        return [leaf for t in transform._transforms for leaf in _leaves(t)]
    return [transform]


def flow_dim(transform: Transform) -> int | None:
    """The dimension an nflows flow acts on, read from its autoregressive layers and permutations
    (``None`` when no layer declares one)."""
    for leaf in _leaves(transform):
        if isinstance(leaf, MaskedAffineAutoregressiveTransform):
            return leaf.features
        if isinstance(leaf, Permutation):
            return len(leaf._permutation)
    return None


def flow_context_features(transform: Transform) -> int | None:
    """The context size the flow's MADE networks take, ``None`` for an unconditional flow."""
    for leaf in _leaves(transform):
        layer = getattr(getattr(leaf, "autoregressive_net", None), "context_layer", None)
        if layer is not None:
            return layer.in_features
    return None


class FlowPosterior(dist.TorchDistribution):
    r"""q(z) = p_base(f(z)) |det ∂f(z)/∂z|, the base distribution pushed through f^{-1}.

    ``base``: a reparameterised distribution with event shape ``(D,)`` (the encoder's N(μ, diag σ²), or
    N(0, I)); ``transform``: an nflows flow z ↦ u on R^D (e.g. :func:`maf`); ``context``: ``(*batch, C)``
    for a context-conditioned flow f(·; c), else ``None``. The batch shape is the broadcast of the base's
    batch shape and ``context.shape[:-1]``.

    ``rsample``: u ~ p_base (reparameterised), z = f^{-1}(u; c); gradients reach the base parameters and
    the flow parameters. ``log_prob(z)`` accepts extra leading sample dimensions ``(*sample, *batch, D)``;
    the flow sees them flattened to ``(N, D)``. The inverse of a MAF is sequential (D network passes per
    block), the density one pass per block.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        base: dist.TorchDistribution,
        transform: Transform,
        context: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if len(base.event_shape) != 1 or not base.has_rsample:
            raise FlowConfigError(
                f"the base must be reparameterised with event shape (D,), got event shape {tuple(base.event_shape)}"
                f" and has_rsample={base.has_rsample}"
            )
        dim = base.event_shape[0]
        declared = flow_dim(transform)
        if declared is not None and declared != dim:
            raise FlowConfigError(f"flow dimension {declared} does not match the latent dimension {dim}")
        expected = flow_context_features(transform)
        batch_shape = base.batch_shape
        if expected is None and context is not None:
            raise FlowConfigError("a context was given but the flow is unconditional (built without context_features)")
        if expected is not None:
            if context is None:
                raise FlowConfigError(f"the flow is conditioned on a context of {expected} features; none was given")
            if context.dim() < 1 or context.shape[-1] != expected:
                raise FlowConfigError(
                    f"the flow expects a context of {expected} features, got a context of shape {tuple(context.shape)}"
                )
            try:
                batch_shape = torch.broadcast_shapes(base.batch_shape, context.shape[:-1])
            except RuntimeError as error:
                raise FlowConfigError(
                    f"context batch shape {tuple(context.shape[:-1])} does not broadcast with the base's "
                    f"{tuple(base.batch_shape)}"
                ) from error
            context = context.expand(*batch_shape, expected)
        self.base = base if base.batch_shape == batch_shape else base.expand(batch_shape)
        self.transform = transform
        self.context = context
        super().__init__(batch_shape, base.event_shape, validate_args=validate_args)

    def _flat_context(self, shape: torch.Size) -> Tensor | None:
        """The context broadcast to ``(*shape, C)`` and flattened to ``(N, C)``."""
        if self.context is None:
            return None
        return self.context.expand(*shape, self.context.shape[-1]).reshape(-1, self.context.shape[-1])

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """z = f^{-1}(u; c), u ~ p_base, of shape ``(*sample_shape, *batch, D)``."""
        u = self.base.rsample(sample_shape)
        shape, dim = u.shape[:-1], u.shape[-1]
        z, _ = self.transform.inverse(u.reshape(-1, dim), self._flat_context(shape))
        return z.reshape(u.shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p_base(f(z; c)) + log |det ∂f(z; c)/∂z|, of shape ``(*sample, *batch)``."""
        if self._validate_args:
            self._validate_sample(value)
        dim = self.event_shape[0]
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        u, log_det = self.transform(value.expand(*shape, dim).reshape(-1, dim), self._flat_context(shape))
        return self.base.log_prob(u.reshape(*shape, dim)) + log_det.reshape(shape)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> "FlowPosterior":
        batch_shape = torch.Size(batch_shape)
        context = None if self.context is None else self.context.expand(*batch_shape, self.context.shape[-1])
        return FlowPosterior(self.base.expand(batch_shape), self.transform, context, validate_args=False)


class MAFSampler(nn.Module):
    r"""A MAF density p(z) = N(f(z); 0, I) |det ∂f/∂z| fitted to training latents, for unconditional generation.

    f = MAF ∘ standardisation, the latter the fixed affine map z ↦ (z − mean) / std of the training latents.
    ``fit`` maximises Σ_i log p(z_i) with Adam over shuffled minibatches (seeded: the flow's initialisation
    and the shuffles are reproducible and leave the global RNG untouched); ``losses`` holds each epoch's mean
    negative log-likelihood.
    """

    def __init__(
        self,
        num_blocks: int = 2,
        hidden_features: int = 128,
        num_hidden_layers: int = 3,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ValueError(f"MAFSampler needs epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
        self.num_blocks, self.hidden_features, self.num_hidden_layers = num_blocks, hidden_features, num_hidden_layers
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.transform: CompositeTransform | None = None
        self.losses: list[float] = []

    def fit(self, latents: Tensor) -> "MAFSampler":
        """Fit the flow to ``latents`` of shape ``(N, D)``; returns ``self``."""
        if latents.dim() != 2 or latents.shape[0] < 2:
            raise ValueError(f"latents must have shape (N, D) with N >= 2, got {tuple(latents.shape)}")
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("latents contain NaN or inf")
        latents = latents.detach().float()
        n = latents.shape[0]
        shift, scale = latents.mean(0), latents.std(0).clamp_min(1e-6)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.transform = self._transform(shift, scale).to(latents.device)
        optimizer = torch.optim.Adam(self.transform.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.losses = []
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator).to(latents.device)
            total = 0.0
            for start in range(0, n, self.batch_size):
                z = latents[order[start : start + self.batch_size]]
                loss = -self.distribution().log_prob(z).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * z.shape[0]
            self.losses.append(total / n)
        return self

    def _transform(self, shift: Tensor, scale: Tensor) -> CompositeTransform:
        """f = MAF ∘ (z ↦ (z − shift) / scale) on R^D, D = len(shift), built from the global RNG."""
        flow = maf(shift.shape[0], self.num_blocks, self.hidden_features, self.num_hidden_layers)
        return CompositeTransform([PointwiseAffineTransform(-shift / scale, 1.0 / scale), flow])

    def state(self) -> dict:
        """The fitted flow's architecture and tensors, which :meth:`from_state` rebuilds the sampler from."""
        if self.transform is None:
            raise RuntimeError("MAFSampler is not fitted; call fit(latents) first")
        architecture = {
            "dim": int(self.transform._transforms[0]._shift.shape[0]),
            "num_blocks": self.num_blocks,
            "hidden_features": self.hidden_features,
            "num_hidden_layers": self.num_hidden_layers,
        }
        return {"architecture": architecture, "transform": dict(self.transform.state_dict())}

    @classmethod
    def from_state(cls, state: dict, seed: int = 0) -> "MAFSampler":
        """The fitted sampler :meth:`state` describes (its flow's tensors loaded as saved)."""
        architecture = dict(state["architecture"])
        dim = architecture.pop("dim")
        sampler = cls(**architecture, seed=seed)
        sampler.transform = sampler._transform(torch.zeros(dim), torch.ones(dim))
        sampler.transform.load_state_dict(state["transform"])
        return sampler

    def distribution(self) -> FlowPosterior:
        """The fitted density as a :class:`FlowPosterior` with base N(0, I) (batch shape ``()``)."""
        if self.transform is None:
            raise RuntimeError("MAFSampler is not fitted; call fit(latents) first")
        zeros = torch.zeros_like(self.transform._transforms[0]._shift)
        return FlowPosterior(dist.Normal(zeros, torch.ones_like(zeros)).to_event(1), self.transform)

    def sample(self, n: int) -> Tensor:
        """n draws z = f^{-1}(u), u ~ N(0, I), shape ``(n, D)`` (global RNG)."""
        with torch.no_grad():
            return self.distribution().sample(torch.Size([n]))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) for z of shape ``(*batch, D)``."""
        distribution = self.distribution()
        if z.shape[-1:] != distribution.event_shape:
            raise ValueError(
                f"latents have dimension {z.shape[-1]}, the sampler was fitted on {distribution.event_shape[0]}"
            )
        return distribution.log_prob(z)
