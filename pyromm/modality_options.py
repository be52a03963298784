"""Per-modality options of a run (``RunConfig.modalities``): likelihood, network family and weight, and the
networks they name: ``mlp``, ``spike_mlp``, ``conv``, ``resnet`` or a user :class:`NetworkFactory` by import path."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from torch import nn

from pyromm import likelihoods
from pyromm.nn import (
    MLPDecoder,
    MLPEncoder,
    PolyMNISTConvDecoder,
    PolyMNISTConvEncoder,
    PolyMNISTResNetDecoder,
    PolyMNISTResNetEncoder,
)
from pyromm.nn.spike import spike_decoder, spike_encoder
from pyromm.options import ConfigError

if TYPE_CHECKING:
    from pyromm.config import RunConfig

NETWORKS = ("mlp", "conv", "resnet", "spike_mlp")
LIKELIHOODS = ("laplace", "normal", "bernoulli")

MODALITY_LIKELIHOODS = LIKELIHOODS + ("categorical",)
IMAGE_NETWORKS = {
    "conv": (PolyMNISTConvEncoder, PolyMNISTConvDecoder),
    "resnet": (PolyMNISTResNetEncoder, PolyMNISTResNetDecoder),
}


class NetworkFactory(Protocol):
    """A user network family, named in the config as ``package.module:Name``: called with the modality's event shape
    and the latent size, it returns the ``(encoder, decoder)`` pair, or an object with ``encoder`` and ``decoder``
    attributes (e.g. an ``nn.Module`` class holding both). Encoder: ``(N, *event_shape) -> (loc, log_var)``, each
    ``(N, latent_dim)``; decoder: ``(N, latent_dim) -> (N, *event_shape)``."""

    def __call__(self, event_shape: tuple[int, ...], latent_dim: int) -> Any: ...


@dataclass(frozen=True)
class ModalityOptions:
    """One modality's entry of ``RunConfig.modalities``; None falls back to the run's ``likelihood``, ``network``
    and ``hidden``. Likelihood ``categorical`` (integer class indices, with ``num_classes``) takes MLPs on one-hot
    inputs and logits, or your own networks."""

    likelihood: str | None = None
    network: str | None = None
    hidden: tuple[int, ...] | None = None
    weight: float = 1.0
    num_classes: int | None = None  # likelihood 'categorical': the data are class indices 0..num_classes-1


def modality_options(cfg: RunConfig) -> dict[str, ModalityOptions]:
    """``cfg.modalities`` checked: known keys, a known likelihood, a network name or import path, a weight >= 0."""
    known = [f.name for f in fields(ModalityOptions)]
    options = {}
    for name, entry in (cfg.modalities or {}).items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"modalities.{name} must be a table of {known}, got {entry!r}")
        unknown = sorted(set(entry) - set(known))
        if unknown:
            raise ConfigError(f"modalities.{name}: unknown key {unknown[0]!r}; keys are {known}")
        likelihood, network = entry.get("likelihood"), entry.get("network")
        if likelihood is not None and likelihood not in MODALITY_LIKELIHOODS:
            raise ConfigError(f"modalities.{name}.likelihood must be one of {MODALITY_LIKELIHOODS}, got {likelihood!r}")
        num_classes = entry.get("num_classes")
        if likelihood == "categorical" and num_classes is None:
            raise ConfigError(f"modalities.{name}: likelihood 'categorical' needs num_classes, the number of classes")
        if likelihood != "categorical" and num_classes is not None:
            raise ConfigError(f"modalities.{name}: num_classes applies to likelihood 'categorical' only")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2):
            raise ConfigError(f"modalities.{name}.num_classes must be an integer >= 2, got {num_classes!r}")
        if network is not None and network not in NETWORKS and not is_import_path(network):
            raise ConfigError(
                f"modalities.{name}.network must be one of {NETWORKS} or an import path 'package.module:Name', "
                f"got {network!r}"
            )
        hidden = entry.get("hidden")
        if hidden is not None and not (isinstance(hidden, list) and all(isinstance(h, int) and h >= 1 for h in hidden)):
            raise ConfigError(f"modalities.{name}.hidden must be a list of sizes >= 1, got {hidden!r}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"modalities.{name}.weight must be a number >= 0, got {weight!r}")
        options[name] = ModalityOptions(
            likelihood, network, None if hidden is None else tuple(hidden), float(weight), num_classes
        )
    return options


def is_import_path(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:Name``."""
    module, sep, attr = text.partition(":")
    return bool(sep and module and attr)


def networks(name: str, options: ModalityOptions, shape: tuple[int, ...], dim: int, cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of modality ``name``: the network family ``options.network`` (else ``cfg.network``),
    MLPs with ``options.hidden`` (else ``cfg.hidden``) hidden units, or a :class:`NetworkFactory` by import path."""
    network = options.network or cfg.network
    if options.num_classes is not None and not (network == "mlp" or is_import_path(network)):
        raise ConfigError(f"modality {name!r}: likelihood 'categorical' needs network 'mlp' or your own, got {network!r}")
    if network == "mlp":
        hidden, classes = options.hidden or tuple(cfg.hidden), options.num_classes
        return (
            MLPEncoder(shape, dim, hidden=hidden, num_classes=classes),
            MLPDecoder(dim, shape, hidden=tuple(reversed(hidden)), num_classes=classes),
        )
    if network == "spike_mlp":
        if len(shape) != 1:
            raise ConfigError(f"network 'spike_mlp' needs flat (d,) data; modality {name!r} is {shape}")
        return spike_encoder(shape[0], dim), spike_decoder(dim, shape[0])
    if network in IMAGE_NETWORKS:
        if len(shape) != 3 or shape[0] not in (1, 3) or tuple(shape[1:]) != (28, 28):
            raise ConfigError(
                f"network {network!r} needs (1|3, 28, 28) images; modality {name!r} is {shape} (use 'mlp' or your own)"
            )
        encoder_class, decoder_class = IMAGE_NETWORKS[network]
        return encoder_class(dim, shape[0]), decoder_class(dim, shape[0])
    built = import_object(network, f"modality {name!r}: network")(tuple(shape), dim)
    pair = built if isinstance(built, tuple) else (getattr(built, "encoder", None), getattr(built, "decoder", None))
    if len(pair) != 2 or not all(isinstance(net, nn.Module) for net in pair):
        raise ConfigError(
            f"modality {name!r}: network {network!r} returned {type(built).__name__}; expected an (encoder, decoder) "
            "pair of nn.Modules or an object with encoder and decoder modules"
        )
    return pair


def import_object(path: str, what: str) -> Any:
    """The object at the import path ``package.module:Name`` (a ConfigError prefixed by ``what`` if there is none)."""
    module_name, sep, attribute = path.partition(":")
    if not (sep and module_name and attribute):
        raise ConfigError(f"{what} {path!r} is not an import path 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{what} {path!r}: cannot import module {module_name!r} ({err})") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError(f"{what} {path!r}: module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    return found


def categorical_likelihood(options: ModalityOptions, event_dim: int) -> likelihoods.Categorical | None:
    """The Categorical likelihood of a modality with ``num_classes``; None for the others."""
    return None if options.num_classes is None else likelihoods.Categorical(event_dim, options.num_classes)
