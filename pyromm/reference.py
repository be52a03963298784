"""Reference modes: where pyromm computes something differently from a reference implementation.

Each :class:`Difference` is one row of ``docs/reference_differences.md``: a :class:`~pyromm.config.RunConfig`
option, pyromm's value of it, the models it applies to and the value each reference uses. A reference mode
(``RunConfig.reference``) gives every row the value of that reference at once; an option set explicitly
wins over the mode. Options left unset (None) take the mode's value, else pyromm's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pyromm.options import did_you_mean

MMVM_CODE_MODELS = ("independent", "mmvm", "avg", "poe", "moe", "mopoe")
MULTIVAE_MODELS = ("mopoe_reference", "mvae", "mvtcae", "jmvae", "mmvae", "mmvae_plus", "jnf", "jnf_shared")
# Models whose unimodal posteriors are Gaussians N(μ, exp(log_var / 2)) (MMVAE and MMVAE+ use Laplace ones).
NORMAL_POSTERIOR_MODELS = (
    "independent", "mmvm", "avg", "poe", "moe", "mopoe", "mopoe_reference", "mvae", "mvtcae", "jmvae", "telbo",
    "jnf", "jnf_shared",
)
EVERY_MODEL = NORMAL_POSTERIOR_MODELS + ("mmvae", "mmvae_plus")


@dataclass(frozen=True)
class Reference:
    """A reference implementation: its name in ``RunConfig.reference``, what it is, the models it trains."""

    name: str
    description: str
    models: tuple[str, ...]


REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        Reference("mmvm-code", "the MMVM VAE authors' code (Sutter et al. 2024) and its baselines", MMVM_CODE_MODELS),
        Reference("multivae", "MultiVae 1.0.3 (Senellart et al.)", MULTIVAE_MODELS),
        Reference("mmvae-code", "the official MMVAE code (Shi et al. 2019)", ("mmvae",)),
        Reference("mmvaeplus-code", "the official MMVAE+ code (Palumbo et al. 2023)", ("mmvae_plus",)),
    )
}


@dataclass(frozen=True)
class Difference:
    """One row of the table: ``option`` (a RunConfig field) is ``default`` in pyromm and ``values[r]`` in
    reference r; it applies to ``models`` only, and to ``datasets`` only (None: every dataset)."""

    option: str
    default: Any
    models: tuple[str, ...]
    values: Mapping[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None

    def applies_to(self, model: str, dataset: str) -> bool:
        """Whether the row concerns ``model`` trained on ``dataset``."""
        return model in self.models and (self.datasets is None or dataset in self.datasets)


DIFFERENCES: tuple[Difference, ...] = (
    # independent VAEs: the rate is weighted by β² (the MMVM code's PolyMNIST baseline multiplies by β twice)
    Difference("beta_squared", False, ("independent",), {"mmvm-code": True}),
    # MoE/MoPoE stratified sampling: blocks of ⌊B/K⌋ with the remainder in the last block
    Difference("mixture_blocks", "even", ("moe", "mopoe"), {"mmvm-code": "remainder_last"}),
    # Gaussian posteriors: σ = exp(log_var / 2) with no floor added
    Difference("posterior_scale_floor", 1e-6, NORMAL_POSTERIOR_MODELS, {"mmvm-code": 0.0, "multivae": 0.0}),
    # latent linear probe: LogisticRegression(max_iter=10000)
    Difference("latent_max_iter", 1000, EVERY_MODEL, {"mmvm-code": 10000}),
    # evaluation: the test split cut to a multiple of 64 (the reference's evaluation loader drops the last batch)
    Difference("test_drop_last", False, EVERY_MODEL, {"mmvm-code": True}),
    # MMVAE+ DReG: log q at the live posterior parameters (the official code's estimator)
    Difference("dreg_detach", "proper", ("mmvae_plus",), {"mmvaeplus-code": "reference"}),
    # JNF subsets: fixed-step HMC (ε = 0.01) from a member's base Gaussian, its final state
    Difference("jnf_subset_sampler", "adaptive", ("jnf", "jnf_shared"), {"multivae": "reference"}),
    # optimiser: Adam with amsgrad
    Difference("amsgrad", False, ("mmvae", "mmvae_plus"), {"mmvae-code": True, "mmvaeplus-code": True}),
    # coherence classifiers of image modalities: the MMVM code's ResNet, 10 epochs, Adam 1e-3, batches of 256
    Difference("coherence_classifier", "cnn", EVERY_MODEL, {"mmvm-code": "resnet"}),
    # rats: no train/test split, the model trains and is scored on every sample
    Difference("rats_split", "held_out", EVERY_MODEL, {"mmvm-code": "all"}, datasets=("rats",)),
    # rats encoders: the second head is log σ, σ = exp(h) + 1e-6
    Difference("posterior_head", "log_var", MMVM_CODE_MODELS, {"mmvm-code": "log_std"}, datasets=("rats",)),
    # latent linear probe: trained on the encoder means of the last epoch's first ⌈eval_num_train/B⌉ training steps
    Difference("latent_probe_features", "final", MMVM_CODE_MODELS, {"mmvm-code": "training_epoch"}),
)
OPTIONS = {d.option: d for d in DIFFERENCES}
# The MMVM code's evaluation batch size; its evaluation loader drops the last, incomplete batch.
REFERENCE_EVAL_BATCH = 64


def unknown_reference(name: str) -> str | None:
    """The error message for a reference name that does not exist, else None."""
    if name in REFERENCES:
        return None
    return f"unknown reference {name!r}; choose from {tuple(REFERENCES)}{did_you_mean(name, REFERENCES)}"


def unsupported_model(name: str, model: str) -> str | None:
    """The error message when reference ``name`` does not train ``model``, else None."""
    models = REFERENCES[name].models
    if model in models:
        return None
    others = tuple(r.name for r in REFERENCES.values() if model in r.models)
    return (
        f"reference {name!r} ({REFERENCES[name].description}) does not train model {model!r}; "
        f"its models are {models}; references that train {model!r}: {others or 'none'}"
    )


def misapplied_option(option: str, model: str, dataset: str) -> str | None:
    """The error message when ``option`` is set explicitly for a model or dataset it does not apply to, else None."""
    difference = OPTIONS[option]
    if model not in difference.models:
        return f"{option} applies to models {difference.models}, not to {model!r}; leave it unset"
    if not difference.applies_to(model, dataset):
        return f"{option} applies to datasets {difference.datasets}, not to {dataset!r}; leave it unset"
    return None


def resolve(option: str, explicit: Any, reference: str | None, model: str, dataset: str) -> Any:
    """The value of ``option``: ``explicit`` when set, else the reference's value for a model and dataset the row
    applies to, else pyromm's default."""
    if explicit is not None:
        return explicit
    difference = OPTIONS[option]
    if reference is not None and difference.applies_to(model, dataset) and reference in difference.values:
        return difference.values[reference]
    return difference.default
