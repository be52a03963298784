"""Shape, dtype, parameter-count and gradient checks of the networks in ``pyromm.nn``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pyromm.nn import (
    MLPDecoder,
    MLPEncoder,
    PolyMNISTConvDecoder,
    PolyMNISTConvEncoder,
    PolyMNISTResNetDecoder,
    PolyMNISTResNetEncoder,
)

BATCH_SIZES = (1, 2, 5)
LATENT = 16
IMAGE = (3, 28, 28)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def block(c_in: int, c_out: int) -> int:
    hidden = min(c_in, c_out)
    shortcut = conv(c_in, c_out, 1, bias=False) if c_in != c_out else 0
    return conv(c_in, hidden, 3) + conv(hidden, c_out, 3) + shortcut


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return PolyMNISTResNetEncoder(LATENT), PolyMNISTResNetDecoder(LATENT)


def pairs(resnet: tuple[nn.Module, nn.Module]) -> dict[str, tuple[nn.Module, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "mlp": (MLPEncoder((1, 8, 8), LATENT), MLPDecoder(LATENT, (1, 8, 8)), (1, 8, 8)),
        "mlp_leaky": (
            MLPEncoder(7, LATENT, hidden=(32,), activation=nn.LeakyReLU),
            MLPDecoder(LATENT, 7, hidden=(32,), activation=nn.LeakyReLU),
            (7,),
        ),
        "conv": (PolyMNISTConvEncoder(LATENT), PolyMNISTConvDecoder(LATENT), IMAGE),
        "resnet": (*resnet, IMAGE),
    }


@pytest.mark.parametrize("name", ["mlp", "mlp_leaky", "conv", "resnet"])
@pytest.mark.parametrize("n", BATCH_SIZES)
def test_shapes_and_finite(resnet, name: str, n: int) -> None:
    encoder, decoder, event_shape = pairs(resnet)[name]
    x = torch.rand(n, *event_shape)
    loc, log_var = encoder(x)
    assert loc.shape == log_var.shape == (n, LATENT)
    assert torch.isfinite(loc).all() and torch.isfinite(log_var).all()
    params = decoder(torch.randn(n, LATENT))
    assert params.shape == (n, *event_shape) and params.dtype == torch.float32


@pytest.mark.parametrize("name", ["mlp", "conv", "resnet"])
def test_samples_are_independent(resnet, name: str) -> None:
    encoder, decoder, event_shape = pairs(resnet)[name]
    x, z = torch.rand(3, *event_shape), torch.randn(3, LATENT)
    torch.testing.assert_close(encoder(x)[0][1:2], encoder(x[1:2])[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(decoder(z)[1:2], decoder(z[1:2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_categorical(n: int) -> None:
    encoder = MLPEncoder((4, 3), LATENT, hidden=(32,), num_classes=5)
    decoder = MLPDecoder(LATENT, (4, 3), hidden=(32,), num_classes=5)
    loc, log_var = encoder(torch.randint(0, 5, (n, 4, 3)))
    assert loc.shape == log_var.shape == (n, LATENT) and torch.isfinite(log_var).all()
    logits = decoder(torch.randn(n, LATENT))
    assert logits.shape == (n, 4, 3, 5) and logits.dtype == torch.float32


def test_mlp_without_hidden_layers() -> None:
    loc, _ = MLPEncoder(6, LATENT, hidden=())(torch.rand(2, 6))
    assert loc.shape == (2, LATENT)
    assert MLPDecoder(LATENT, 6, hidden=())(torch.randn(2, LATENT)).shape == (2, 6)


def test_resnet_parameter_counts() -> None:
    # Reference: ResnetEncoder / ResnetDecoder in networks/ConvNetworksPolyMNIST.py of thomassutter/mmvmvae
    # (commit 14ef771a), counted by hand from its layer list for latent_dim = 512:
    # encoder 13,516,224 = conv 3->64 (1,792) + blocks 64->64 (73,856), 64->128 (118,976),
    # 128->256 (475,520) + two heads 12544->512 (2 x 6,423,040);
    # decoder 7,104,963 = fc 512->12544 (6,435,072) + blocks 256->128 (475,392), 128->64 (118,912),
    # 64->64 (73,856) + conv 64->3 (1,731).
    d, flat = 512, 256 * 7 * 7
    encoder_ref = conv(3, 64, 3) + block(64, 64) + block(64, 128) + block(128, 256) + 2 * linear(flat, d)
    decoder_ref = linear(d, flat) + block(256, 128) + block(128, 64) + block(64, 64) + conv(64, 3, 3)
    assert encoder_ref == 13_516_224 and decoder_ref == 7_104_963
    assert n_params(PolyMNISTResNetEncoder(d)) == encoder_ref
    assert n_params(PolyMNISTResNetDecoder(d)) == decoder_ref


def test_conv_parameter_counts() -> None:
    # Reference: Encoder / Decoder of the same file (and MoPoE's PolyMNIST conv nets) for latent_dim = 512.
    d = 512
    encoder_ref = conv(3, 32, 3) + conv(32, 64, 3) + conv(64, 128, 3) + linear(2048, d) + 2 * linear(d, d)
    decoder_ref = linear(d, 2048) + conv(128, 64, 3) + conv(64, 32, 3) + conv(32, 3, 3)
    assert (encoder_ref, decoder_ref) == (1_667_648, 1_143_747)
    assert n_params(PolyMNISTConvEncoder(d)) == encoder_ref
    assert n_params(PolyMNISTConvDecoder(d)) == decoder_ref


@pytest.mark.parametrize("name", ["mlp", "mlp_leaky", "conv", "resnet"])
def test_gradients_reach_every_parameter(resnet, name: str) -> None:
    encoder, decoder, event_shape = pairs(resnet)[name]
    encoder.zero_grad()
    decoder.zero_grad()
    loc, log_var = encoder(torch.rand(4, *event_shape))
    z = loc + (0.5 * log_var).exp() * torch.randn_like(loc)
    decoder(z).square().sum().backward()
    for module in (encoder, decoder):
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
