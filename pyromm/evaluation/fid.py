"""Fréchet Inception Distance (FID) of generated images against real ones, on a feature network you supply.

    FID = ||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

with (μ, Σ) the mean and covariance of the features of each image set (Heusel et al., 2017).

Why no FID library: torchmetrics' ``FrechetInceptionDistance`` needs torch-fidelity, which downloads its
Inception weights when the metric is built; pytorch-fid builds its Inception from torchvision (not a pyromm
dependency) and downloads its weights too. Neither runs offline without extra packages, and the distance
itself is a few lines, so it is computed here in float64 with numpy, and the feature network is pluggable:

* any callable following :class:`FeatureExtractor` (images ``(N, C, H, W)`` in [0, 1] → features ``(N, F)``),
  for example a ``torch.nn.Module`` you built and loaded yourself;
* :meth:`InceptionFeatures.from_weights`: a state dict (``.pt``/``.pth``, read with
  ``torch.load(weights_only=True)``) loaded into the architecture you pass (such as pytorch-fid's
  ``InceptionV3`` or torchvision's ``inception_v3``). The file is ``path``, else ``$PYROMM_FID_WEIGHTS``, else
  ``<data root>/fid/inception.pth``; when none exists, :class:`FIDWeightsError` says where to put it.

pyromm does not ship or download Inception weights: numbers are comparable with published FIDs only when the
network and its weights are the ones those papers used (pytorch-fid's ``pt_inception-2015-12-05``). TorchScript
files are not accepted: ``torch.jit`` is deprecated in the torch versions pyromm supports.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pyromm.data.paths import data_root
from pyromm.modality_options import import_object

WEIGHTS_ENV_VAR = "PYROMM_FID_WEIGHTS"


class FIDWeightsError(RuntimeError):
    """The feature network's weights are missing, unreadable, or do not fit the architecture."""


class FeatureExtractor(Protocol):
    """``extractor(images) -> features``: images ``(N, C, H, W)`` with values in [0, 1], features ``(N, F)``."""

    def __call__(self, images: Tensor) -> Tensor: ...


def default_weights_path() -> Path:
    """Where FID looks for weights when neither a path nor ``$PYROMM_FID_WEIGHTS`` is given."""
    return data_root() / "fid" / "inception.pth"


class InceptionFeatures(nn.Module):
    """A feature network following :class:`FeatureExtractor`: single-channel images are repeated to 3 channels,
    images are resized (bilinear) to ``image_size`` × ``image_size`` when it is not None (299 for Inception v3),
    and outputs of shape ``(N, F, 1, 1)`` (pooled feature maps) are flattened to ``(N, F)``.

    Values stay in [0, 1]; a network that expects another range normalises its own input (as pytorch-fid's
    ``InceptionV3(normalize_input=True)`` does)."""

    def __init__(self, network: nn.Module, *, image_size: int | None = 299) -> None:
        super().__init__()
        self.network = network
        self.image_size = image_size

    @classmethod
    def from_weights(
        cls, path: str | os.PathLike | None, architecture: nn.Module, *, image_size: int | None = 299
    ) -> "InceptionFeatures":
        """``architecture`` with the state dict at ``path`` (else ``$PYROMM_FID_WEIGHTS``, else
        :func:`default_weights_path`) loaded strictly; raises :class:`FIDWeightsError` naming the file when it is
        missing, is not a state dict of tensors, or does not fit ``architecture``."""
        if path is not None:
            file, given = Path(path).expanduser(), "the path given"
        elif os.environ.get(WEIGHTS_ENV_VAR):
            file, given = Path(os.environ[WEIGHTS_ENV_VAR]).expanduser(), f"${WEIGHTS_ENV_VAR}"
        else:
            file, given = default_weights_path(), "the default location"
        if not file.is_file():
            raise FIDWeightsError(
                f"no FID feature-network weights at {file} ({given}). pyromm does not download them: put the state "
                f"dict (.pt/.pth) of your Inception network at {default_weights_path()}, or set {WEIGHTS_ENV_VAR} to "
                "its path, or pass path=...; see docs/fid.md"
            )
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise FIDWeightsError(
                f"{file} is not a readable state dict (torch.load with weights_only=True): {err}"
            ) from err
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise FIDWeightsError(f"{file} holds a {type(state).__name__}, not a state dict of tensors")
        try:
            architecture.load_state_dict(state)
        except RuntimeError as err:
            raise FIDWeightsError(f"the weights in {file} do not fit {type(architecture).__name__}: {err}") from err
        return cls(architecture.eval(), image_size=image_size)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if self.image_size is not None and tuple(x.shape[2:]) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = self.network(x)
        if out.dim() == 4 and out.shape[2:] == (1, 1):
            out = out.flatten(1)
        return out


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of ``(N, F)`` features in float64: μ = mean over samples, Σ = unbiased covariance (divisor
    N − 1)."""
    x = features.detach().cpu().double().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must have shape (N, F) with N >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||μ1 − μ2||² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^{1/2}: the squared 2-Wasserstein distance of two
    Gaussians.

    Tr (Σ1 Σ2)^{1/2} = Σ_i √λ_i with λ the eigenvalues of the symmetric PSD matrix Σ1^{1/2} Σ2 Σ1^{1/2}
    (similar to Σ1 Σ2), so no complex square root arises; tiny negative eigenvalues from rounding count as 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, value, shape in (("mu2", mu2, (dim,)), ("sigma1", sigma1, (dim, dim)), ("sigma2", sigma2, (dim, dim))):
        if dim < 0 or value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}; expected {shape} for mu1 of shape {mu1.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(distance, 0.0)


def image_features(
    images: Tensor, feature_extractor: FeatureExtractor, *, name: str = "images", batch_size: int = 100
) -> Tensor:
    """``(N, F)`` features of ``images`` ((N, C, H, W) floats in [0, 1], or uint8 scaled by 1/255), computed in
    batches without gradients (a ``nn.Module`` in eval mode); errors name the image set ``name``."""
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{name} has {images.shape[0]} image(s); FID needs at least 2 per set")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise ValueError(f"{name} have dtype {images.dtype}; give floats in [0, 1] or uint8")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]")
    module = feature_extractor if isinstance(feature_extractor, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            features = torch.cat([feature_extractor(chunk) for chunk in images.split(batch_size)])
    finally:
        if module is not None:
            module.train(was_training)
    if features.dim() != 2 or features.shape[0] != images.shape[0]:
        raise ValueError(
            f"the feature extractor gave shape {tuple(features.shape)} for {name} of shape {tuple(images.shape)}; "
            f"expected ({images.shape[0]}, F)"
        )
    return features


def fid(
    real_images: Tensor, generated_images: Tensor, feature_extractor: FeatureExtractor, *, batch_size: int = 100
) -> float:
    """FID between two image sets: :func:`frechet_distance` of the :func:`feature_statistics` of their
    :func:`image_features`. Lower is better; 0 for identical feature distributions. The estimate is biased upwards
    by an amount that shrinks with the number of images: compare FIDs computed on sets of equal size."""
    real = feature_statistics(image_features(real_images, feature_extractor, name="real_images", batch_size=batch_size))
    generated = feature_statistics(
        image_features(generated_images, feature_extractor, name="generated_images", batch_size=batch_size)
    )
    return frechet_distance(*real, *generated)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root V diag(√max(λ, 0)) Vᵀ of a symmetric PSD matrix V diag(λ) Vᵀ."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def network_features(network: str, weights: str | os.PathLike | None = None) -> InceptionFeatures:
    """:meth:`InceptionFeatures.from_weights` on the network built by calling the import path ``network``
    (``package.module:Name``) without arguments."""
    return InceptionFeatures.from_weights(weights, import_object(network, "fid_network")())


def image_modalities(event_shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The modalities holding (1 or 3, H, W) images: those FID applies to."""
    return [name for name, shape in event_shapes.items() if len(shape) == 3 and shape[0] in (1, 3)]


def generation_fid(
    model: nn.Module, test_images: Mapping[str, Tensor], feature_extractor: FeatureExtractor,
    *, generator: torch.Generator | None = None, batch_size: int = 100,
) -> dict[str, float]:
    """Per image modality m, FID between its test images and as many images of ``model.sample(n)`` (the decoder
    means, clamped to [0, 1]: the real images' range). Lower is better."""
    n = min(len(images) for images in test_images.values())
    samples = model.sample(n, generator=generator)
    return {
        name: fid(images[:n], samples[name].clamp(0.0, 1.0).to(images.device), feature_extractor, batch_size=batch_size)
        for name, images in test_images.items()
    }
