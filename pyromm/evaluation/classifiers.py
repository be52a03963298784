"""Training (and caching) of the per-modality classifiers that judge generated samples."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from pyromm.data.dataset import MultimodalDataset
from pyromm.files import write_bytes, write_json
from pyromm.models.joint_sampling import evaluating
from pyromm.nn.classifiers import ResNetClassifier, classifier_for

# The MMVM code's recipe for its ResNet image classifiers: Adam with lr 1e-3, batches of 256, 10 epochs.
RESNET_EPOCHS, RESNET_BATCH_SIZE, RESNET_LR = 10, 256, 1e-3


def class_labels(dataset: MultimodalDataset) -> Tensor:
    """The ``(N,)`` integer class labels of ``dataset``; raises if it has none or multi-label ones."""
    if dataset.labels is None:
        raise ValueError("evaluation needs a dataset with labels, got labels=None")
    if dataset.labels.dim() != 1 or dataset.labels.is_floating_point():
        raise ValueError(
            f"evaluation needs (N,) integer class labels, got {tuple(dataset.labels.shape)} {dataset.labels.dtype}"
        )
    return dataset.labels


def modality_dataset(dataset: MultimodalDataset, name: str) -> MultimodalDataset:
    """The samples of ``dataset`` that observe modality ``name``, with that modality and the labels only."""
    labels = class_labels(dataset)
    observed = dataset.mask.get(name) if dataset.mask is not None else None
    if observed is None:
        return MultimodalDataset({name: dataset.data[name]}, labels)
    return MultimodalDataset({name: dataset.data[name][observed]}, labels[observed])


def classifier_accuracy(classifier: nn.Module, dataset: MultimodalDataset, name: str, batch_size: int = 256) -> float:
    """Accuracy = mean_i [argmax_c f(x_i)_c = y_i] over the samples observing modality ``name``."""
    data = modality_dataset(dataset, name)
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    with evaluating(classifier):
        for batch in data.batches(batch_size):
            correct += (classifier(batch.data[name]).argmax(-1) == batch.labels).sum()
    return int(correct) / len(data)


def fit_classifier(
    classifier: nn.Module,
    data: MultimodalDataset,
    name: str,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> None:
    """Minimise the cross-entropy of ``classifier`` on modality ``name`` of ``data`` with Adam."""
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    for _ in range(epochs):
        for batch in data.batches(batch_size, shuffle=True, generator=generator):
            loss = nn.functional.cross_entropy(classifier(batch.data[name]), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    classifier.eval()


def train_modality_classifiers(
    dataset_train: MultimodalDataset,
    dataset_test: MultimodalDataset,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    device: torch.device | str,
    seed: int,
    cache_dir: str | Path | None = None,
    cache_key: str | None = None,
    spectrograms: Sequence[str] = (),
    image: str = "cnn",
) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """One classifier per modality, trained on the observed samples of that modality with their labels.

    Architecture: ``classifier_for(event_shape, num_classes, input_classes, spectrogram, image)`` — the modalities
    named in ``spectrograms`` ((1, F, T) data) get a SpectrogramClassifier, integer (class-index) data an MLP on
    one-hot inputs, (C, H, W) data an ImageClassifier (``image='cnn'``) or a ResNetClassifier (``image='resnet'``),
    anything else an MLP on the flattened values. Each trains with Adam for ``epochs`` epochs of ``batch_size`` at
    ``lr``, except the ResNets: the MMVM code's 10 epochs of 256 at lr 1e-3 (``RESNET_*``).

    With ``cache_dir`` the weights are saved to ``classifier_<name>.pt`` (a state dict) next to a JSON sidecar
    ``classifier_<name>.json`` holding the architecture, the test accuracy and ``cache_key``; a later call with the
    same non-None ``cache_key`` and architecture loads them instead of training. Returns the classifiers (eval mode,
    on ``device``) and their test accuracies.
    """
    device = torch.device(device)
    labels = torch.cat([class_labels(dataset_train), class_labels(dataset_test)])
    num_classes = int(labels.max()) + 1
    cache = None if cache_dir is None else Path(cache_dir)
    classifiers: dict[str, nn.Module] = {}
    accuracies: dict[str, float] = {}
    for index, (name, event_shape) in enumerate(dataset_train.event_shapes.items()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + index)
            classifier = classifier_for(
                event_shape, num_classes, _input_classes(dataset_train, dataset_test, name), name in spectrograms, image
            )
        classifier.to(device)
        loaded = _load_cached(classifier, cache, name, cache_key, device)
        if loaded is not None:
            accuracies[name] = loaded
        else:
            generator = torch.Generator().manual_seed(seed + index)
            train = modality_dataset(dataset_train, name).to(device)
            if isinstance(classifier, ResNetClassifier):
                recipe = {"epochs": RESNET_EPOCHS, "batch_size": RESNET_BATCH_SIZE, "lr": RESNET_LR}
            else:
                recipe = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
            fit_classifier(classifier, train, name, generator=generator, **recipe)
            accuracies[name] = classifier_accuracy(classifier, dataset_test.to(device), name, batch_size)
            if cache is not None:
                _save_cached(classifier, cache, name, cache_key, accuracies[name])
        classifiers[name] = classifier.eval()
    return classifiers, accuracies


def _input_classes(train: MultimodalDataset, test: MultimodalDataset, name: str) -> int | None:
    """1 + the largest class index of integer (non-uint8) modality data, None for float or uint8 image data."""
    x = train.data[name]
    if x.is_floating_point() or x.dtype == torch.uint8:
        return None
    return int(max(int(x.max()), int(test.data[name].max()))) + 1


def _cache_paths(cache: Path, name: str) -> tuple[Path, Path]:
    return cache / f"classifier_{name}.pt", cache / f"classifier_{name}.json"


def _load_cached(
    classifier: nn.Module, cache: Path | None, name: str, cache_key: str | None, device: torch.device
) -> float | None:
    """Load the cached weights into ``classifier`` and return their test accuracy, or None on a mismatch; a
    cache entry that cannot be loaded gives a warning naming the file (the classifier is then retrained)."""
    if cache is None or cache_key is None:
        return None
    weights, sidecar = _cache_paths(cache, name)
    if not (weights.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("cache_key") != cache_key or meta.get("architecture") != classifier.config():
            return None
        accuracy = float(meta["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(f"classifier cache {sidecar} cannot be read ({type(err).__name__}: {err}); retraining the "
                      f"{name!r} classifier and replacing it", stacklevel=3)
        return None
    try:
        classifier.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except Exception as err:  # noqa: BLE001 - any unreadable or foreign file: retrain, naming it
        detail = " ".join(str(err).split())[:200]
        warnings.warn(f"classifier cache {weights} cannot be loaded ({type(err).__name__}: {detail}); retraining the "
                      f"{name!r} classifier and replacing it", stacklevel=3)
        return None
    return accuracy


def _save_cached(classifier: nn.Module, cache: Path, name: str, cache_key: str | None, accuracy: float) -> None:
    """Weights, then the sidecar, each written atomically (``pyromm.files``): runs of a sweep in concurrent
    processes never read a half-written cache entry."""
    weights, sidecar = _cache_paths(cache, name)
    meta = {"modality": name, "architecture": classifier.config(), "test_accuracy": accuracy, "cache_key": cache_key}
    buffer = io.BytesIO()
    torch.save(classifier.state_dict(), buffer)
    write_bytes(weights, buffer.getvalue())
    write_json(sidecar, meta)
