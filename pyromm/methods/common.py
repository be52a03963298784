"""What several built-in methods share: the modalities' networks and likelihoods, the joint encoder, the rate
option."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyromm import likelihoods
from pyromm.datasets import DATASETS
from pyromm.methods.method import EventShapes
from pyromm.modality_options import ModalityOptions, categorical_likelihood, modality_options, networks
from pyromm.models import EncoderHead, JointEncoder, Modality
from pyromm.nn import SpectrogramConvDecoder, SpectrogramConvEncoder
from pyromm.options import ConfigError, option

if TYPE_CHECKING:
    from pyromm.config import RunConfig

RATE_MODES = ("analytic", "jensen", "selected", "mc")


def rate_option(default: str) -> str:
    """The ``rate`` option of the methods trained by ``RateELBO``, with the method's ``default``."""
    return option(default, "the rate estimator of RateELBO (docs/objectives.md)", choices=RATE_MODES)


def build_likelihood(cfg: RunConfig, event_dim: int, kind: str | None = None) -> likelihoods.Likelihood:
    """The likelihood ``kind`` (default ``cfg.likelihood``); Laplace and Normal with scale ``likelihood_scale``."""
    kind = kind or cfg.likelihood
    if kind == "laplace":
        return likelihoods.Laplace(event_dim, cfg.likelihood_scale)
    if kind == "normal":
        return likelihoods.Normal(event_dim, cfg.likelihood_scale)
    return likelihoods.Bernoulli(event_dim)


def build_modalities(cfg: RunConfig, event_shapes: EventShapes, dim: int | None = None) -> list[Modality]:
    """One encoder/decoder pair per modality over a latent of ``dim`` (default ``latent_dim``) units: the networks
    of ``cfg.modalities[name]`` (else ``cfg.network``), or the spectrogram conv nets for the dataset's
    ``spectrogram_modalities``; the likelihood ``modalities[name].likelihood``, else
    ``modality_likelihoods[name]``, else ``cfg.likelihood``."""
    dim = dim or cfg.latent_dim
    chosen = cfg.modality_likelihoods or {}
    unknown = sorted(set(chosen) - set(event_shapes))
    if unknown:
        raise ConfigError(f"modality_likelihoods names unknown modality {unknown[0]!r}; modalities are {list(event_shapes)}")
    options = modality_options(cfg)
    spectrograms = DATASETS[cfg.dataset].spectrogram_modalities
    modalities = []
    for name, shape in event_shapes.items():
        choice = options.get(name, ModalityOptions())
        if name in spectrograms:
            encoder, decoder = SpectrogramConvEncoder(dim, shape), SpectrogramConvDecoder(dim, shape)
        else:
            encoder, decoder = networks(name, choice, shape, dim, cfg)
        likelihood = categorical_likelihood(choice, len(shape)) or build_likelihood(
            cfg, len(shape), choice.likelihood or chosen.get(name)
        )
        modalities.append(Modality(name, encoder, decoder, likelihood, shape, choice.weight))
    return modalities


def build_joint_encoder(cfg: RunConfig, modalities: list[Modality]) -> JointEncoder:
    """q(z | X) of JMVAE, TELBO and JNF: a head per modality, fresh copies of the unimodal encoder networks, whose
    2·D features an MLP maps to the joint posterior's parameters."""
    heads = {m.name: EncoderHead(build_modalities(cfg, {m.name: m.event_shape})[0].encoder) for m in modalities}
    return JointEncoder(heads, {n: 2 * cfg.latent_dim for n in heads}, cfg.latent_dim)
