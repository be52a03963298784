"""1-D convolutional networks for integer sequences (characters, words) with Categorical likelihoods, and the
per-modality likelihood weight w_m = reference size / size_m (the MMVM code weighs each modality so).

Encoder ``(N, L)`` long → one-hot ``(N, C, L)`` → [Conv1d(kernel 4, stride 2, padding 1) → LeakyReLU(0.2)]
per entry of ``channels`` (L halves each time) → flatten → linear heads ``loc``, ``log_var`` ``(N, D)``.
Decoder ``(N, D)`` → linear to ``(channels[-1], L / 2^n)`` → the mirrored transposed convolutions (LeakyReLU
between, none after the last) → ``(N, C, L)`` → logits ``(N, L, C)``.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from pyromm.likelihoods import Categorical
from pyromm.models.modality import Modality

_SLOPE = 0.2
DEFAULT_CHANNELS = (64, 128, 256)
IMAGE_REFERENCE_SIZE = 64 * 64


def _check_length(length: int, channels: Sequence[int]) -> int:
    factor = 2 ** len(channels)
    if not channels or length % factor:
        raise ValueError(f"sequence length {length} must be divisible by 2^{len(channels)} = {factor} (one per conv)")
    return length // factor


class TextConvEncoder(nn.Module):
    """``x: (N, length)`` class indices in ``[0, num_classes)`` → ``(loc, log_var)``, each ``(N, latent_dim)``."""

    def __init__(
        self, length: int, num_classes: int, latent_dim: int, channels: Sequence[int] = DEFAULT_CHANNELS
    ) -> None:
        super().__init__()
        reduced = _check_length(length, channels)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        previous = num_classes
        for width in channels:
            layers += [nn.Conv1d(previous, width, 4, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
            previous = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.loc = nn.Linear(previous * reduced, latent_dim)
        self.log_var = nn.Linear(previous * reduced, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        one_hot = F.one_hot(x.long(), self.num_classes).to(self.loc.weight.dtype).transpose(1, 2)
        h = self.features(one_hot)
        return self.loc(h), self.log_var(h)


class TextConvDecoder(nn.Module):
    """``z: (N, latent_dim)`` → Categorical logits ``(N, length, num_classes)``."""

    def __init__(
        self, latent_dim: int, length: int, num_classes: int, channels: Sequence[int] = DEFAULT_CHANNELS
    ) -> None:
        super().__init__()
        reduced = _check_length(length, channels)
        widths = list(reversed(channels))
        layers: list[nn.Module] = [nn.Linear(latent_dim, widths[0] * reduced), nn.Unflatten(1, (widths[0], reduced))]
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.LeakyReLU(_SLOPE), nn.ConvTranspose1d(n_in, n_out, 4, stride=2, padding=1)]
        layers += [nn.LeakyReLU(_SLOPE), nn.ConvTranspose1d(widths[-1], num_classes, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).transpose(1, 2)


def size_weight(size: int, reference_size: int = IMAGE_REFERENCE_SIZE) -> float:
    """w_m = reference_size / size_m: with a 64·64 image reference, CelebA text (256) → 16, CUB text (32) → 128."""
    if size < 1 or reference_size < 1:
        raise ValueError(f"sizes must be >= 1, got size {size} and reference_size {reference_size}")
    return reference_size / size


def text_modality(
    name: str,
    length: int,
    num_classes: int,
    latent_dim: int,
    *,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    reference_size: int = IMAGE_REFERENCE_SIZE,
) -> Modality:
    """A text modality: conv encoder/decoder, Categorical likelihood, weight ``size_weight(length, reference_size)``."""
    return Modality(
        name,
        TextConvEncoder(length, num_classes, latent_dim, channels),
        TextConvDecoder(latent_dim, length, num_classes, channels),
        Categorical(1, num_classes),
        (length,),
        weight=size_weight(length, reference_size),
    )
