"""Run configuration: one validated, JSON-serialisable record of everything a run depends on."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pyromm import reference as references

DATASETS = ("digits", "polymnist", "translated_polymnist", "rats", "mnist_fsdd", "shapes", "files")
MODELS = ("independent", "mmvm", "avg", "poe", "moe", "mopoe", "mopoe_reference", "mvae", "mvtcae", "jmvae", "telbo", "mmvae", "mmvae_plus", "jnf", "jnf_shared")
DEFAULT_ALPHA = {"mmvm": 0.0, "mvtcae": 0.1, "jmvae": 0.1}
DEFAULT_RATE = {"mmvm": "jensen", "moe": "selected", "mopoe": "selected", "mopoe_reference": "jensen"}
NETWORKS = ("mlp", "conv", "resnet", "spike_mlp")
LIKELIHOODS = ("laplace", "normal", "bernoulli")
OBJECTIVES = ("fast", "pyro")
DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
SEED_RANGE = (0, 2**32 - 1)  # what numpy's legacy seeding accepts
PROJECTOR_OBJECTIVES = ("dcca", "infonce")
# Fields a resumed run may change: where and how long it trains and how it is evaluated, not what its
# checkpoints mean.
RESUMABLE_FIELDS = frozenset(
    {"epochs", "device", "checkpoint_every", "classifier_epochs", "classifier_train_limit", "eval_num_train",
     "latent_sampler", "data_root", "cache_root"}
)


class ConfigError(ValueError):
    """A configuration field has a wrong name, type or value."""


@dataclass
class RunConfig:
    """A training run: data, model, objective, optimisation and evaluation settings."""

    dataset: str = "digits"
    num_views: int = 3
    data_root: str | None = None
    data_path: str | None = None  # dataset 'files': an .npz file or a directory of .npy/.pt files (pyromm.data.own)
    test_fraction: float = 0.2  # dataset 'files': the share of samples held out as the test split
    modalities: dict | None = None  # per modality: likelihood, network, hidden, weight (pyromm.modality_options)
    cache_root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    keep_probability: float = 1.0
    train_complete_only: bool = False
    sound_missing_max: float = 0.0
    model: str = "mmvm"
    rate: str | None = None
    alpha: float | None = None
    alpha_schedule: dict | None = None
    num_random_subsets: int = 0
    kl_warmup_epochs: int = 0
    num_importance_samples: int = 10
    estimator: str = "dreg"
    private_dim: int | None = None
    dreg_detach: str | None = None
    second_stage_epochs: int | None = None
    projector_epochs: int | None = None
    projector_objective: str = "dcca"
    projection_dim: int = 20
    temperature: float = 0.1
    flow_blocks: int = 2
    flow_hidden: int = 128
    flow_context: bool = False
    val_fraction: float = 0.0
    restore_best: bool = False
    early_stopping_patience: int | None = None
    beta: float = 1.0
    latent_dim: int = 16
    network: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    likelihood: str = "laplace"
    likelihood_scale: float = 0.75
    modality_likelihoods: dict | None = None
    objective: str = "fast"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 1
    on_nonfinite: str = "raise"
    compile: bool = False
    autocast: str | None = None
    flush_denormals: bool = True
    pyro_validation: bool = True
    tensorboard: bool = False
    log_every_steps: int = 0
    classifier_epochs: int = 5
    classifier_train_limit: int | None = None
    eval_num_train: int = 10000
    latent_sampler: str | None = None
    reference: str | None = None
    beta_squared: bool | None = None
    mixture_blocks: str | None = None
    posterior_scale_floor: float | None = None
    latent_max_iter: int | None = None
    amsgrad: bool | None = None
    jnf_subset_sampler: str | None = None
    test_drop_last: bool | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def alpha_value(self) -> float:
        """The model's α (MMVM: weight of N(0, I) in the prior; MVTCAE: its TC weight; JMVAE: the weight of
        its unimodal KL terms), default per model."""
        return self.alpha if self.alpha is not None else DEFAULT_ALPHA.get(self.model, 0.0)

    @property
    def rate_mode(self) -> str:
        """The rate estimator, unless set: each model's reference (MMVM and MoPoE's: 'jensen'; the MMVM
        code's MoE/MoPoE baselines: 'selected'; Gaussian posteriors: 'analytic')."""
        if self.rate is not None:
            return self.rate
        return DEFAULT_RATE.get(self.model, "analytic")

    def setting(self, option: str) -> Any:
        """The value of a reference-difference option (``pyromm.reference.DIFFERENCES``): as set, else the
        ``reference`` mode's value for this model, else pyromm's default (docs/reference_differences.md)."""
        if option not in references.OPTIONS:
            raise ConfigError(f"{option!r} is not a reference-difference option; options are {tuple(references.OPTIONS)}")
        return references.resolve(option, getattr(self, option), self.reference, self.model)

    def reference_settings(self) -> dict[str, Any]:
        """The reference-difference options whose value here differs from pyromm's default: option -> value."""
        settings = {option: self.setting(option) for option in references.OPTIONS}
        return {k: v for k, v in settings.items() if v != references.OPTIONS[k].default}

    @property
    def jnf_stage_epochs(self) -> tuple[int, int, int]:
        """JNF's (projector, joint, flow) stage epochs, summing to ``epochs``: flows ``second_stage_epochs``
        (default epochs // 2), projectors (jnf_shared only) ``projector_epochs`` (default half the rest)."""
        flows = self.second_stage_epochs or self.epochs // 2
        projectors = 0 if self.model != "jnf_shared" else self.projector_epochs or (self.epochs - flows) // 2
        return projectors, self.epochs - flows - projectors, flows

    def validate(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
            _check_finite(f.name, getattr(self, f.name))
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ConfigError(f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be a list of integer layer sizes >= 1, got {self.hidden!r}")
        for name in ("train_limit", "test_limit", "classifier_train_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or null for all samples), got {getattr(self, name)}")
        if self.alpha is not None and self.model not in DEFAULT_ALPHA:
            raise ConfigError(
                f"alpha applies to models {sorted(DEFAULT_ALPHA)}, not {self.model!r}, which would ignore it: remove alpha"
            )
        if self.alpha_schedule is not None and self.model != "mmvm":
            raise ConfigError(f"alpha_schedule applies to model 'mmvm' only, not {self.model!r}: remove alpha_schedule")
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("model", self.model, MODELS)
        _check_choice("network", self.network, NETWORKS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        _check_choice("objective", self.objective, OBJECTIVES)
        _check_choice("on_nonfinite", self.on_nonfinite, ("raise", "skip"))
        if self.rate is not None:
            _check_choice("rate", self.rate, ("analytic", "jensen", "selected", "mc"))
        if self.latent_sampler is not None:
            _check_choice("latent_sampler", self.latent_sampler, ("gmm", "maf"))
        if self.autocast is not None:
            _check_choice("autocast", self.autocast, ("bf16",))
        if self.dataset == "files" and self.data_path is None:
            raise ConfigError("dataset 'files' needs data_path: an .npz file or a directory of .npy/.pt files")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        if not 1 <= self.num_views <= 5:
            raise ConfigError(f"num_views must lie in 1..5, got {self.num_views}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {self.alpha}")
        _check_choice("estimator", self.estimator, ("elbo", "dreg") if self.model == "mmvae_plus" else ("dreg", "iwae"))
        self._validate_reference()
        if self.private_dim is not None and self.private_dim < 1:
            raise ConfigError(f"private_dim must be >= 1, got {self.private_dim}")
        if self.model == "mmvae_plus" and self.estimator == "elbo" and self.num_importance_samples != 1:
            raise ConfigError("estimator 'elbo' needs num_importance_samples (K) = 1")
        if self.num_importance_samples < 1:
            raise ConfigError(f"num_importance_samples (K) must be >= 1, got {self.num_importance_samples}")
        if not 0.0 <= self.keep_probability <= 1.0:
            raise ConfigError(f"keep_probability (η) must lie in [0, 1], got {self.keep_probability}")
        if not 0.0 <= self.sound_missing_max <= 1.0:
            raise ConfigError(f"sound_missing_max must lie in [0, 1], got {self.sound_missing_max}")
        if self.sound_missing_max > 0.0 and self.dataset != "mnist_fsdd":
            raise ConfigError(f"sound_missing_max needs dataset 'mnist_fsdd' (a sound modality), got {self.dataset!r}")
        for name, choice in (self.modality_likelihoods or {}).items():
            _check_choice(f"modality_likelihoods[{name!r}]", choice, LIKELIHOODS)
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}")
        if self.second_stage_epochs is not None and not 1 <= self.second_stage_epochs < self.epochs:
            raise ConfigError(f"second_stage_epochs must lie in 1..epochs-1, got {self.second_stage_epochs}")
        _check_choice("projector_objective", self.projector_objective, PROJECTOR_OBJECTIVES)
        if self.projector_epochs is not None and self.projector_epochs < 1:
            raise ConfigError(f"projector_epochs must be >= 1, got {self.projector_epochs}")
        if self.model in ("jnf", "jnf_shared") and self.objective == "pyro":
            raise ConfigError(f"{self.model} trains with its stage objectives; objective 'pyro' does not apply")
        if self.model in ("jnf", "jnf_shared") and min(self.jnf_stage_epochs[self.model == "jnf" :]) < 1:
            raise ConfigError(
                f"{self.model}: epochs={self.epochs}, projector_epochs={self.projector_epochs} and "
                f"second_stage_epochs={self.second_stage_epochs} give stages of {self.jnf_stage_epochs} epochs "
                "(projectors, joint, flows); each needs >= 1"
            )
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.restore_best and self.val_fraction == 0.0:
            raise ConfigError("restore_best needs a validation split: set val_fraction > 0")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}")
        if self.early_stopping_patience is not None and self.val_fraction == 0.0:
            raise ConfigError("early_stopping_patience needs a validation split: set val_fraction > 0")
        if self.log_every_steps < 0:
            raise ConfigError(f"log_every_steps must be >= 0 (0: no per-step log), got {self.log_every_steps}")
        if self.num_random_subsets < 0:
            raise ConfigError(f"num_random_subsets must be >= 0, got {self.num_random_subsets}")
        for name in ("latent_dim", "epochs", "batch_size", "checkpoint_every", "eval_num_train", "projection_dim",
                     "flow_blocks", "flow_hidden", "classifier_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def _validate_reference(self) -> None:
        """The reference mode and the options of docs/reference_differences.md."""
        if self.reference is not None:
            message = references.unknown_reference(self.reference) or references.unsupported_model(
                self.reference, self.model
            )
            if message:
                raise ConfigError(message)
        for option, difference in references.OPTIONS.items():
            value = getattr(self, option)
            if value is not None and value != difference.default:
                message = references.misapplied_option(option, self.model)
                if message:
                    raise ConfigError(message)
        if self.dreg_detach is not None:
            _check_choice("dreg_detach", self.dreg_detach, ("proper", "reference"))
        if self.jnf_subset_sampler is not None:
            _check_choice("jnf_subset_sampler", self.jnf_subset_sampler, ("adaptive", "reference"))
        if self.mixture_blocks is not None:
            _check_choice("mixture_blocks", self.mixture_blocks, ("even", "remainder_last"))
        floor = self.posterior_scale_floor
        if floor is not None and not (floor >= 0 and math.isfinite(floor)):
            raise ConfigError(f"posterior_scale_floor must be a finite number >= 0, got {floor}")
        if self.latent_max_iter is not None and self.latent_max_iter < 1:
            raise ConfigError(f"latent_max_iter must be >= 1, got {self.latent_max_iter}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def from_json(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool}


def _check_finite(name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")


def _check_type(name: str, value: Any, annotation: str) -> None:
    options = [a.strip() for a in str(annotation).split("|")]
    if value is None:
        if "None" in options:
            return
        raise ConfigError(f"{name} must not be None")
    for option in options:
        base = option.split("[")[0]
        if base == "list" and isinstance(value, list):
            return
        if base == "dict" and isinstance(value, dict):
            return
        expected = _TYPES.get(base)
        if expected is not None and isinstance(value, expected) and not (base != "bool" and isinstance(value, bool)):
            return
    raise ConfigError(f"{name} has type {type(value).__name__}, expected {annotation}")
