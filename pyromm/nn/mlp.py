"""Fully connected encoder and decoder for modalities of any event shape."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F


def _as_shape(event_shape: int | Sequence[int]) -> tuple[int, ...]:
    return (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, each followed by ``activation()``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flattens ``x: (N, *event_shape)`` and maps it to ``(loc, log_var)``, each ``(N, latent_dim)``.

    With ``num_classes`` the input holds integer class indices, which are one-hot encoded first.
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        self.num_classes = num_classes
        in_features = math.prod(self.event_shape) * (num_classes or 1)
        self.body = _mlp([in_features, *hidden], activation)
        width = hidden[-1] if hidden else in_features
        self.loc = nn.Linear(width, latent_dim)
        self.log_var = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.num_classes is not None:
            x = F.one_hot(x.long(), self.num_classes).to(self.loc.weight.dtype)
        h = self.body(x.reshape(x.shape[0], -1))
        return self.loc(h), self.log_var(h)


class MLPDecoder(nn.Module):
    """Maps ``z: (N, latent_dim)`` to unconstrained parameters ``(N, *event_shape)``.

    With ``num_classes`` the output is ``(N, *event_shape, num_classes)`` logits.
    """

    def __init__(
        self,
        latent_dim: int,
        event_shape: int | Sequence[int],
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        self.num_classes = num_classes
        self.out_shape = self.event_shape + ((num_classes,) if num_classes is not None else ())
        self.body = _mlp([latent_dim, *hidden], activation)
        width = hidden[-1] if hidden else latent_dim
        self.out = nn.Linear(width, math.prod(self.out_shape))

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(z)).reshape(z.shape[0], *self.out_shape)


class MLPProjector(nn.Module):
    """Flattens ``x: (N, *event_shape)`` and maps it to an embedding ``(N, out_features)``, g(x) = W h(x) + b.

    With ``normalize`` the embedding is scaled to unit L2 norm, g(x) / ‖g(x)‖ (contrastive projectors).
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.ReLU,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.event_shape = _as_shape(event_shape)
        in_features = math.prod(self.event_shape)
        self.body = _mlp([in_features, *hidden], activation)
        self.out = nn.Linear(hidden[-1] if hidden else in_features, out_features)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        g = self.out(self.body(x.reshape(x.shape[0], -1)))
        return F.normalize(g, dim=-1) if self.normalize else g
