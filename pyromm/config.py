"""Run configuration: one validated, JSON-serialisable record of everything a run depends on.

A config holds the general fields declared here, the options of its method (``model``) and those of its dataset,
each declared by the method's or dataset's own ``Options`` dataclass; all are read as attributes (``cfg.beta``,
``cfg.alpha``, ``cfg.num_views``) and written flat by :meth:`RunConfig.to_dict`. A key that neither the general
fields nor the chosen method or dataset declare is refused, with the closest known key.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from pyromm import reference as references
from pyromm.datasets import DATASETS
from pyromm.identity import RESUMABLE_FIELDS
from pyromm.methods import METHODS
from pyromm.modality_options import LIKELIHOODS, NETWORKS, is_import_path
from pyromm.options import ConfigError, OptionInfo, check_options, check_value, describe, did_you_mean, option
from pyromm.plugins import load_installed_plugins, load_plugins, plugin_path

__all__ = ["ConfigError", "RunConfig", "RESUMABLE_FIELDS", "general_options"]

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
SEED_RANGE = (0, 2**32 - 1)  # what numpy's legacy seeding accepts
load_installed_plugins()


@dataclass(init=False, eq=False)
class RunConfig:
    """A training run: data, method, optimisation and evaluation settings, and the method's and dataset's options.

    ``RunConfig(model="mmvm", beta=2.0, alpha=0.5)``; ``replace(model=...)`` starts the new method from its
    defaults (and ``replace(dataset=...)`` the new dataset).
    """

    model: str = option("mmvm", "the method: see 'pyromm methods' for each one and its options")
    dataset: str = option("digits", "the dataset: see 'pyromm datasets' for each one and its options")
    plugins: list[str] = option(doc="Python files or modules to import first, which register your own methods and "
                                "datasets", default_factory=list)
    data_root: str | None = option(None, "where datasets are read from (default: $PYROMM_DATA, else ~/.cache/pyromm)")
    cache_root: str | None = option(None, "where generated data and classifiers are cached (default: $PYROMM_CACHE, "
                                    "else ~/.cache/pyromm)")
    modalities: dict | None = option(None, "per modality: likelihood, network, hidden, weight, num_classes "
                                     "(a [modalities.NAME] table in TOML)")
    train_limit: int | None = option(None, "use only the first N training samples")
    test_limit: int | None = option(None, "use only the first N test samples")
    keep_probability: float = option(1.0, "η: keep each non-first training modality per sample with this probability "
                                     "(incomplete data)")
    train_complete_only: bool = option(False, "train on the complete samples only (after keep_probability)")
    beta: float = option(1.0, "β, the weight of the rate (KL) term")
    kl_warmup_epochs: int = option(0, "ramp β linearly from 0 over this many epochs (JMVAE: its per-epoch warm-up)")
    latent_dim: int = option(16, "latent units (per modality for mmvm/independent)")
    network: str = option("mlp", "encoder/decoder family of every modality without its own", choices=NETWORKS)
    hidden: list[int] = option(doc="hidden layer sizes of the MLP networks", default_factory=lambda: [256, 256])
    likelihood: str = option("laplace", "p(x | z) of every modality without its own", choices=LIKELIHOODS)
    likelihood_scale: float = option(0.75, "the fixed scale of the Laplace and Normal likelihoods")
    modality_likelihoods: dict | None = option(None, "per modality name: its likelihood (laplace, normal, bernoulli)")
    objective: str = option("fast", "'fast': the method's own ELBO; 'pyro': pyro.infer.Trace_ELBO",
                            choices=("fast", "pyro"))
    epochs: int = option(20, "training epochs")
    batch_size: int = option(128, "samples per step")
    lr: float = option(1e-3, "Adam's learning rate")
    seed: int = option(0, "random seed of the networks, the batches and the evaluation")
    device: str = option("cpu", "cpu, cuda, cuda:N or mps")
    checkpoint_every: int = option(1, "write a checkpoint every N epochs (and at the end)")
    on_nonfinite: str = option("raise", "a NaN/inf loss: stop with an error, or skip the step",
                               choices=("raise", "skip"))
    compile: bool = option(False, "torch.compile the networks")
    autocast: str | None = option(None, "mixed precision on CUDA", choices=("bf16",))
    flush_denormals: bool = option(True, "flush denormal floats to zero on CPU (faster, no effect on results)")
    pyro_validation: bool = option(True, "Pyro's checks of every distribution's parameters and support")
    tensorboard: bool = option(False, "write TensorBoard scalars and generation grids to RUN_DIR/tensorboard")
    log_every_steps: int = option(0, "append the loss terms to steps.jsonl every N steps (0: never)")
    val_fraction: float = option(0.0, "hold out this share of the training split for a per-epoch validation loss")
    restore_best: bool = option(False, "end with the weights of the epoch of lowest validation loss")
    early_stopping_patience: int | None = option(None, "stop after N epochs without a lower validation loss")
    classifier_epochs: int = option(20, "epochs of the coherence classifiers (their test accuracy is reported)")
    classifier_train_limit: int | None = option(None, "train the coherence classifiers on the first N samples")
    eval_num_train: int = option(10000, "training samples of the latent linear probe")
    latent_sampler: str | None = option(None, "how models without a prior sample latents for joint coherence "
                                        "(default per model)", choices=("gmm", "maf"))
    store_latent_sampler: bool = option(True, "evaluation fits a latent sampler (latent_sampler's kind, else gmm) on "
                                        "the training latents of models without an unconditional prior (mmvm, "
                                        "independent) and stores it for model.sample after pyromm.load; false skips "
                                        "the fit, whose full-covariance EM costs O(N·K·D²) a step for D = views × "
                                        "latent_dim")
    fid_network: str | None = option(None, "'package.module:Name' of a function or class returning your Inception "
                                     "network (nn.Module): evaluation then reports the FID of each image modality, "
                                     "test images against as many model.sample(n) (docs/fid.md)")
    fid_weights: str | None = option(None, "the FID network's state dict (default: $PYROMM_FID_WEIGHTS, else "
                                     "DATA_ROOT/fid/inception.pth)")
    reference: str | None = option(None, "turn on one reference code's behaviour for every difference "
                                   f"(docs/reference_differences.md): one of {', '.join(references.REFERENCES)}")
    beta_squared: bool | None = option(None, "independent VAEs: weight the rate by β² (the MMVM code)")
    mixture_blocks: str | None = option(None, "moe/mopoe stratified blocks: 'even' or 'remainder_last' (MMVM code)",
                                        choices=("even", "remainder_last"))
    posterior_scale_floor: float | None = option(None, "σ floor of the Gaussian posteriors (default 1e-6)")
    latent_max_iter: int | None = option(None, "iterations of the latent probe's logistic regression (default 1000)")
    amsgrad: bool | None = option(None, "Adam with amsgrad (the MMVAE and MMVAE+ code)")
    jnf_subset_sampler: str | None = option(None, "JNF subset posteriors: 'adaptive' HMC or MultiVae's 'reference' "
                                            "sampler", choices=("adaptive", "reference"))
    test_drop_last: bool | None = option(None, "evaluate on the first ⌊N/64⌋·64 test samples (MMVM code)")
    dreg_detach: str | None = option(None, "MMVAE+ DReG: 'proper' or the official code's 'reference' estimator",
                                     choices=("proper", "reference"))
    coherence_classifier: str | None = option(None, "image coherence classifiers: 'cnn' (classifier_epochs) or the MMVM "
                                              "code's 'resnet' (always 10 epochs, Adam 1e-3, batch 256)",
                                              choices=("cnn", "resnet"))
    rats_split: str | None = option(None, "rats: 'held_out' (a fifth of each odour's trials tested) or 'all' (train = "
                                    "test = every sample, MMVM code)", choices=("held_out", "all"))
    posterior_head: str | None = option(None, "rats encoders' second head: 'log_var' (σ = exp(h/2) + floor) or the MMVM "
                                        "code's 'log_std' (σ = exp(h) + 1e-6)", choices=("log_var", "log_std"))
    latent_probe_features: str | None = option(None, "latent probe fit on means of the 'final' weights, or recorded at "
                                               "the last epoch's first steps ('training_epoch', MMVM code)",
                                               choices=("final", "training_epoch"))

    def __init__(self, **values: Any) -> None:
        problem = unknown_key_problem(values)
        if problem:
            raise ConfigError(problem)
        values["plugins"] = [plugin_path(p) for p in values.get("plugins", [])]
        method = METHODS[values.get("model", _GENERAL["model"].default)]
        data = DATASETS[values.get("dataset", _GENERAL["dataset"].default)]
        method_keys, data_keys = _names(method.Options), _names(data.Options)
        own = {key: value for key, value in values.items() if key in _GENERAL}
        method_values = {key: value for key, value in values.items() if key in method_keys}
        data_values = {key: value for key, value in values.items() if key in data_keys}
        for name, f in _GENERAL.items():
            setattr(self, name, own[name] if name in own else _default(f))
        self.method_options = method.Options(**method_values)
        self.dataset_options = data.Options(**data_values)
        self.validate()

    def __getattr__(self, name: str) -> Any:
        """A method or dataset option, read like a general field."""
        if name.startswith("__") or name in ("method_options", "dataset_options"):
            raise AttributeError(name)
        for options in (self.method_options, self.dataset_options):
            if name in _names(type(options)):
                return getattr(options, name)
        raise AttributeError(
            f"RunConfig of model {self.model!r} and dataset {self.dataset!r} has no option {name!r}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        """General fields are set as attributes; the method's and dataset's options only through ``replace``."""
        for options in (self.__dict__.get("method_options"), self.__dict__.get("dataset_options")):
            if options is not None and name in _names(type(options)):
                raise AttributeError(f"{name} is an option of the config's method or dataset: use cfg.replace({name}=...)")
        super().__setattr__(name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"RunConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RunConfig.from_dict, (self.to_dict(),))

    def setting(self, option: str) -> Any:
        """The value of a reference-difference option (``pyromm.reference.DIFFERENCES``): as set, else the
        ``reference`` mode's value for this model, else pyromm's default (docs/reference_differences.md)."""
        if option not in references.OPTIONS:
            raise ConfigError(f"{option!r} is not a reference-difference option; options are {tuple(references.OPTIONS)}")
        return references.resolve(option, getattr(self, option), self.reference, self.model, self.dataset)

    def reference_settings(self) -> dict[str, Any]:
        """The reference-difference options whose value here differs from pyromm's default and is used: option ->
        value (the log_std head, σ = exp(h) + 1e-6, uses no posterior_scale_floor)."""
        settings = {option: self.setting(option) for option in references.OPTIONS}
        if settings["posterior_head"] == "log_std":
            del settings["posterior_scale_floor"]
        return {k: v for k, v in settings.items() if v != references.OPTIONS[k].default}

    def validate(self) -> None:
        """Every general field, then the method's and the dataset's options and their own checks."""
        hints = typing.get_type_hints(RunConfig)
        for name, f in _GENERAL.items():
            check_value(name, getattr(self, name), hints[name], f.metadata.get("choices"))
        check_options(self.method_options)
        check_options(self.dataset_options)
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ConfigError(f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be a list of integer layer sizes >= 1, got {self.hidden!r}")
        for name in ("train_limit", "test_limit", "classifier_train_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or null for all samples), got {getattr(self, name)}")
        for name in ("latent_dim", "epochs", "batch_size", "checkpoint_every", "eval_num_train", "classifier_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.keep_probability <= 1.0:
            raise ConfigError(f"keep_probability (η) must lie in [0, 1], got {self.keep_probability}")
        for name, choice in (self.modality_likelihoods or {}).items():
            check_value(f"modality_likelihoods[{name!r}]", choice, str, LIKELIHOODS)
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}")
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
        if self.fid_network is not None and not is_import_path(self.fid_network):
            raise ConfigError(f"fid_network must be an import path 'package.module:Name', got {self.fid_network!r}")
        if self.fid_weights is not None and self.fid_network is None:
            raise ConfigError("fid_weights needs fid_network, the architecture the weights load into")
        self._validate_reference()
        METHODS[self.model].check(self)
        DATASETS[self.dataset].check(self)

    def _validate_reference(self) -> None:
        """The reference mode and the options of docs/reference_differences.md."""
        if self.reference is not None:
            message = references.unknown_reference(self.reference) or references.unsupported_model(
                self.reference, self.model
            )
            if message:
                raise ConfigError(message)
        for option_name, difference in references.OPTIONS.items():
            value = getattr(self, option_name)
            if value is not None and value != difference.default:
                message = references.misapplied_option(option_name, self.model, self.dataset)
                if message:
                    raise ConfigError(message)
        floor = self.posterior_scale_floor
        if floor is not None and not floor >= 0:
            raise ConfigError(f"posterior_scale_floor must be a finite number >= 0, got {floor}")
        if floor is not None and self.setting("posterior_head") == "log_std":
            raise ConfigError("posterior_scale_floor does not apply with posterior_head='log_std' (σ = exp(h) + 1e-6, "
                              "the MMVM rats code's own); leave it unset, or set posterior_head='log_var'")
        if self.latent_max_iter is not None and self.latent_max_iter < 1:
            raise ConfigError(f"latent_max_iter must be >= 1, got {self.latent_max_iter}")
        if self.setting("latent_probe_features") == "training_epoch" and (
            self.restore_best or self.early_stopping_patience is not None
        ):
            raise ConfigError(
                "latent_probe_features='training_epoch' records the probe's features during the last scheduled epoch, "
                "so the evaluated weights must be that epoch's: turn off restore_best and early_stopping_patience, or "
                "set latent_probe_features='final'"
            )

    def to_dict(self) -> dict[str, Any]:
        """The general fields, then the method's and the dataset's options: what ``from_dict`` rebuilds from."""
        general = {name: _copy(getattr(self, name)) for name in _GENERAL}
        return {**general, **dataclasses.asdict(self.method_options), **dataclasses.asdict(self.dataset_options)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        if not isinstance(values, Mapping):
            raise ConfigError(f"a config must be a mapping of keys to values, got {type(values).__name__}")
        return cls(**dict(values))

    @classmethod
    def from_saved(cls, values: Mapping[str, Any], path: str | Path) -> "RunConfig":
        """The config a run saved in ``path`` (its ``config.json``); a ConfigError naming the file when this pyromm
        cannot read it back."""
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(
                f"{path}: {err}. The run was saved with settings this pyromm does not read, probably by another "
                "pyromm version: load it with that version, or train it again"
            ) from None

    @classmethod
    def from_json(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes``; a new ``model`` (``dataset``) drops the old one's options not in ``changes``."""
        values = self.to_dict()
        if changes.get("model", self.model) != self.model:
            values = {k: v for k, v in values.items() if k not in _names(type(self.method_options))}
        if changes.get("dataset", self.dataset) != self.dataset:
            values = {k: v for k, v in values.items() if k not in _names(type(self.dataset_options))}
        return RunConfig.from_dict({**values, **changes})


_GENERAL: dict[str, dataclasses.Field] = {f.name: f for f in fields(RunConfig)}


def _names(options: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(options))


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value


def unknown_key_problem(values: Mapping[str, Any]) -> str | None:
    """Why the keys of ``values`` cannot make a config (its ``plugins`` imported first): an unknown or badly typed
    ``model``/``dataset``, or a key that neither the general fields nor that method or dataset declare; None if
    there is nothing wrong with the keys."""
    plugins = values.get("plugins", [])
    check_value("plugins", plugins, list[str])
    load_plugins(plugins)
    for key in ("model", "dataset"):
        check_value(key, values.get(key, _GENERAL[key].default), str)
    names = {}
    for key, registry in (("model", METHODS), ("dataset", DATASETS)):
        name = values.get(key, _GENERAL[key].default)
        try:
            names[key] = registry[name].name
        except ConfigError as err:
            return f"{key}: {err}"
    known = {*_GENERAL, *_names(METHODS[names["model"]].Options), *_names(DATASETS[names["dataset"]].Options)}
    for key in values:
        if key not in known:
            return _unknown_key(key, names["model"], names["dataset"])
    return None


def _unknown_key(key: str, model: str, dataset: str) -> str:
    """Why ``key`` is refused: the methods or datasets that do take it, or the closest key this config takes."""
    methods = [m.name for m in METHODS if key in _names(m.Options)]
    datasets = [d.name for d in DATASETS if key in _names(d.Options)]
    if methods or datasets:
        owners = " and ".join(
            f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"
            for kind, names in (("method", methods), ("dataset", datasets)) if names
        )
        return (
            f"{key!r} is an option of {owners}, not of model {model!r} or dataset {dataset!r}, which would ignore it: "
            f"remove {key}"
        )
    known = [*_GENERAL, *_names(METHODS[model].Options), *_names(DATASETS[dataset].Options)]
    return (
        f"unknown config key {key!r}{did_you_mean(key, known)}; 'pyromm train --help' lists the keys, "
        f"'pyromm methods' and 'pyromm datasets' each method's and dataset's own"
    )


def general_options() -> list[OptionInfo]:
    """The general fields, as ``--help`` lists them."""
    return describe(RunConfig)
