"""Encoders and decoders for PolyMNIST images ``(3, 28, 28)`` (``in_channels``/``out_channels`` = 1: MNIST).

``PolyMNISTResNet*`` follow the ResNet networks used for PolyMNIST in the MMVM VAE paper (Appendix B.4:
"the same architectures as in Daunhawer et al. 2022"), as in ``ResnetEncoder`` / ``ResnetDecoder`` of
``networks/ConvNetworksPolyMNIST.py`` in ``thomassutter/mmvmvae`` (read at commit 14ef771a, the one stored
version of that file):

* residual block ``(c_in -> c_out)``: ``shortcut(x) + 0.1 * conv3x3(lrelu(conv3x3(lrelu(x))))`` with
  LeakyReLU slope 0.2, hidden width ``min(c_in, c_out)`` and a bias-free 1x1 conv shortcut when
  ``c_in != c_out``;
* encoder: conv3x3 3->64, block 64->64, avgpool 28->14, block 64->128, avgpool 14->7, block 128->256,
  then two linear heads ``256*7*7 -> latent_dim`` (no activation before the heads);
* decoder: linear ``latent_dim -> 256*7*7``, block 256->128, upsample 7->14, block 128->64, upsample
  14->28, block 64->64, LeakyReLU, conv3x3 64->3; the output is unconstrained (Laplace location).

``PolyMNISTConv*`` are the light conv nets of the same file and of MoPoE (three stride-2 convs), meant
for fast CPU runs.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

IMAGE_SHAPE = (3, 28, 28)
LEAKY_SLOPE = 0.2
_RESIDUAL_SCALE = 0.1


class ResidualBlock(nn.Module):
    """Pre-activation residual block with a down-weighted residual branch."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        c_hidden = min(c_in, c_out)
        self.conv_0 = nn.Conv2d(c_in, c_hidden, 3, padding=1)
        self.conv_1 = nn.Conv2d(c_hidden, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        dx = self.conv_0(F.leaky_relu(x, LEAKY_SLOPE))
        dx = self.conv_1(F.leaky_relu(dx, LEAKY_SLOPE))
        return self.shortcut(x) + _RESIDUAL_SCALE * dx


def resnet_features(in_channels: int) -> nn.Sequential:
    """conv3x3 in_channels->64, block 64->64, avgpool, block 64->128, avgpool, block 128->256, flatten:
    ``(N, in_channels, H, W) -> (N, 256 * ceil(H/4) * ceil(W/4))`` (``256*7*7`` at 28x28)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, padding=1),
        ResidualBlock(64, 64),
        nn.AvgPool2d(3, stride=2, padding=1),
        ResidualBlock(64, 128),
        nn.AvgPool2d(3, stride=2, padding=1),
        ResidualBlock(128, 256),
        nn.Flatten(),
    )


class PolyMNISTResNetEncoder(nn.Module):
    """ResNet encoder ``(N, in_channels, 28, 28) -> (loc, log_var)``, each ``(N, latent_dim)``."""

    def __init__(self, latent_dim: int = 512, in_channels: int = 3) -> None:
        super().__init__()
        self.features = resnet_features(in_channels)
        self.loc = nn.Linear(256 * 7 * 7, latent_dim)
        self.log_var = nn.Linear(256 * 7 * 7, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.loc(h), self.log_var(h)


class PolyMNISTResNetDecoder(nn.Module):
    """ResNet decoder ``(N, latent_dim) -> (N, out_channels, 28, 28)`` unconstrained image parameters."""

    def __init__(self, latent_dim: int = 512, out_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256 * 7 * 7),
            nn.Unflatten(1, (256, 7, 7)),
            ResidualBlock(256, 128),
            nn.Upsample(scale_factor=2),
            ResidualBlock(128, 64),
            nn.Upsample(scale_factor=2),
            ResidualBlock(64, 64),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(64, out_channels, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PolyMNISTConvEncoder(nn.Module):
    """Light conv encoder of ``(N, in_channels, 28, 28)``: three stride-2 convs (28 -> 14 -> 7 -> 4), a linear
    layer, two heads."""

    def __init__(self, latent_dim: int = 512, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, latent_dim),
            nn.ReLU(),
        )
        self.loc = nn.Linear(latent_dim, latent_dim)
        self.log_var = nn.Linear(latent_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.loc(h), self.log_var(h)


class PolyMNISTConvDecoder(nn.Module):
    """Light conv decoder to ``(N, out_channels, 28, 28)``: a linear layer and three stride-2 transposed convs
    (4 -> 7 -> 14 -> 28)."""

    def __init__(self, latent_dim: int = 512, out_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 3, stride=2, padding=1, output_padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
