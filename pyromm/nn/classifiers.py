"""Per-modality classifiers used as oracles for the coherence of generated samples."""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from pyromm.nn.polymnist import LEAKY_SLOPE, resnet_features

IMAGE_CLASSIFIERS = ("cnn", "resnet")


class ImageClassifier(nn.Module):
    """A small CNN: [conv3x3 → ReLU → maxpool2] per entry of ``channels``, then a 2-layer MLP head.

    Input ``(N, in_channels, H, W)`` with ``H, W >= 2 ** len(channels)``; output logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        smallest = 2 ** len(channels)
        if height < smallest or width < smallest:
            raise ValueError(f"ImageClassifier needs images of at least {smallest}x{smallest}, got {height}x{width}")
        self.args = {
            "in_channels": int(in_channels),
            "image_size": [int(height), int(width)],
            "num_classes": int(num_classes),
            "channels": [int(c) for c in channels],
            "hidden": int(hidden),
        }
        layers: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            layers += [nn.Conv2d(previous, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = out
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(previous * height * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.float()))

    def config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this architecture."""
        return {"type": type(self).__name__, **self.args}


class ResNetClassifier(nn.Module):
    """The MMVM code's PolyMNIST classifier: the features of the PolyMNIST ResNet encoder
    (:func:`pyromm.nn.polymnist.resnet_features`), then LeakyReLU(0.2) and one linear layer to the logits.

    Input ``(N, in_channels, H, W)``, any H, W (28 → 7 after the two pools, as in the reference); output
    ``(N, num_classes)``.
    """

    def __init__(self, in_channels: int, image_size: int | Sequence[int], num_classes: int = 10) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.args = {"in_channels": int(in_channels), "image_size": [int(height), int(width)],
                     "num_classes": int(num_classes)}
        self.features = resnet_features(in_channels)
        pooled = math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
        self.head = nn.Linear(256 * pooled, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.leaky_relu(self.features(x.float()), LEAKY_SLOPE))

    def config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this architecture."""
        return {"type": type(self).__name__, **self.args}


class MLPClassifier(nn.Module):
    """Flatten → [Linear → ReLU] per entry of ``hidden`` → Linear to ``num_classes`` logits.

    With ``input_classes`` the ``in_features`` inputs are integer class indices, one-hot encoded first.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (256,), input_classes: int | None = None
    ) -> None:
        super().__init__()
        self.args = {
            "in_features": int(in_features),
            "num_classes": int(num_classes),
            "hidden": [int(h) for h in hidden],
            "input_classes": None if input_classes is None else int(input_classes),
        }
        self.input_classes = input_classes
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features * (input_classes or 1)
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_classes is not None:
            return self.net(nn.functional.one_hot(x.long(), self.input_classes).float())
        return self.net(x.float())

    def config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this architecture."""
        return {"type": type(self).__name__, **self.args}


class SpectrogramClassifier(nn.Module):
    """Spectrograms ``(N, 1, F, T)``: the F bins are the channels of [conv1d (kernel 5) → ReLU → maxpool2] over
    time per entry of ``channels``, then the maximum over time (shift-invariant) and a 2-layer MLP head."""

    def __init__(
        self, num_bins: int, num_classes: int = 10, channels: Sequence[int] = (64, 128), hidden: int = 128
    ) -> None:
        super().__init__()
        self.args = {
            "num_bins": int(num_bins),
            "num_classes": int(num_classes),
            "channels": [int(c) for c in channels],
            "hidden": int(hidden),
        }
        layers: list[nn.Module] = []
        previous = num_bins
        for out in channels:
            layers += [nn.Conv1d(previous, out, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool1d(2)]
            previous = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(previous, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.float().squeeze(1)).amax(-1))

    def config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this architecture."""
        return {"type": type(self).__name__, **self.args}


CLASSIFIERS = {cls.__name__: cls for cls in (ImageClassifier, ResNetClassifier, MLPClassifier, SpectrogramClassifier)}


def classifier_for(
    event_shape: Sequence[int],
    num_classes: int,
    input_classes: int | None = None,
    spectrogram: bool = False,
    image: str = "cnn",
) -> nn.Module:
    """A SpectrogramClassifier for ``spectrogram`` data ``(1, F, T)``, an MLPClassifier on one-hot inputs for
    integer data with ``input_classes`` categories, for ``(C, H, W)`` events large enough to pool an
    ImageClassifier (``image='cnn'``) or a ResNetClassifier (``image='resnet'``), an MLPClassifier on the flattened
    data otherwise."""
    if image not in IMAGE_CLASSIFIERS:
        raise ValueError(f"image classifier must be one of {IMAGE_CLASSIFIERS}, got {image!r}")
    event_shape = tuple(int(s) for s in event_shape)
    if spectrogram:
        if len(event_shape) != 3 or event_shape[0] != 1:
            raise ValueError(f"a spectrogram classifier needs event shape (1, F, T), got {event_shape}")
        return SpectrogramClassifier(event_shape[1], num_classes)
    if is_image(event_shape, input_classes):
        if image == "resnet":
            return ResNetClassifier(event_shape[0], event_shape[1:], num_classes)
        return ImageClassifier(event_shape[0], event_shape[1:], num_classes)
    return MLPClassifier(math.prod(event_shape), num_classes, input_classes=input_classes)


def is_image(event_shape: Sequence[int], input_classes: int | None = None) -> bool:
    """Whether non-spectrogram data of ``event_shape`` get an image classifier: ``(C, H, W)`` with H, W >= 4, not
    class indices."""
    return input_classes is None and len(event_shape) == 3 and min(event_shape[1:]) >= 4


def classifier_from_config(cfg: dict) -> nn.Module:
    """Rebuild a classifier from its ``config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; choose from {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[kind](**cfg)
