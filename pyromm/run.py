"""One training run from a :class:`RunConfig`: data, model, objective, trainer and evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pyro.infer
import torch
from torch import nn

from pyromm import reference as references
from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset, cache_root, complete_only, drop_modalities
from pyromm.datasets import DATASETS
from pyromm.evaluation import (
    FeatureExtractor,
    evaluate,
    generation_fid,
    image_modalities,
    network_features,
    plot_run,
    run_title,
    train_modality_classifiers,
)
from pyromm.evaluation.training_features import TrainingEpochMeans, read_training_features
from pyromm.files import remove_orphans, write_json
from pyromm.generation import fit_and_save_latent_sampler, needs_latent_sampler
from pyromm.identity import read_config
from pyromm.infer import ELBOObjective
from pyromm.infer.stages import Stage
from pyromm.lock import RunLock
from pyromm.methods import METHODS
from pyromm.methods.method import EventShapes
from pyromm.provenance import EVALUATION_FILE, checkpoint_source, latest_source
from pyromm.train import CheckpointDir, Trainer
from pyromm.train.callbacks import EarlyStopping, TensorBoard, TrainerCallback
from pyromm.train.checkpoint import load_model_state
from pyromm.train.distributed import data_parallel_from_env, is_main_process


def load_data(cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
    """The train and test splits of ``cfg.dataset`` (``DATASETS[cfg.dataset].load``), cut to
    ``train_limit``/``test_limit``.

    The dataset's own missingness (``Dataset.make_missing``) applies to the training split, then with
    ``keep_probability`` η < 1 every non-first training modality is kept per sample with probability η (MultiVae's
    incomplete-data case study); ``train_complete_only`` then keeps the complete samples only. The test split stays
    complete.
    """
    dataset = DATASETS[cfg.dataset]
    train, test = dataset.load(cfg)
    train = dataset.make_missing(cfg, _limit(train, cfg.train_limit))
    if cfg.keep_probability < 1.0:
        train = drop_modalities(train, cfg.keep_probability, seed=cfg.seed)
    if cfg.train_complete_only:
        train = complete_only(train)
    return train, _limit(test, cfg.test_limit)


def split_validation(
    dataset: MultimodalDataset, fraction: float, seed: int
) -> tuple[MultimodalDataset, MultimodalDataset | None]:
    """(train, val): a seeded random ``fraction`` of the samples (at least one) held out, order kept; (all, None)
    for fraction 0."""
    if fraction == 0.0:
        return dataset, None
    n_val = max(1, round(fraction * len(dataset)))
    if n_val >= len(dataset):
        raise ConfigError(f"val_fraction={fraction} leaves no training sample of {len(dataset)}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[n_val:].sort().values), dataset.subset(order[:n_val].sort().values)


def _limit(dataset: MultimodalDataset, limit: int | None) -> MultimodalDataset:
    return dataset if limit is None or limit >= len(dataset) else dataset.subset(slice(0, limit))


def build_model(cfg: RunConfig, event_shapes: EventShapes) -> nn.Module:
    """The model of ``cfg.model`` (``METHODS[cfg.model].model``) on the networks of the config, seeded by ``seed``,
    its Gaussian posteriors' scale floor ``posterior_scale_floor`` and encoder head ``posterior_head``
    (docs/reference_differences.md)."""
    torch.manual_seed(cfg.seed)
    model = METHODS[cfg.model].model(cfg, event_shapes)
    model.scale_floor = cfg.setting("posterior_scale_floor")
    model.posterior_head = cfg.setting("posterior_head")
    return model


def build_elbo(cfg: RunConfig) -> pyro.infer.ELBO:
    """The ``pyro.infer.ELBO`` the model of ``cfg`` trains with on its own programs (its first stage's), or Pyro's
    ``Trace_ELBO`` (the MC rate) for ``objective='pyro'``."""
    return pyro.infer.Trace_ELBO() if cfg.objective == "pyro" else METHODS[cfg.model].elbo(cfg)


def build_objective(cfg: RunConfig) -> ELBOObjective:
    """:func:`build_elbo` as the trainer calls it. Staged methods (TELBO, JNF) name their stages' ELBOs in
    :func:`build_stages`."""
    return ELBOObjective(build_elbo(cfg))


def build_schedules(cfg: RunConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The schedules of ``cfg.model`` (``METHODS[cfg.model].schedules``): β and the method's own."""
    return METHODS[cfg.model].schedules(cfg, steps_per_epoch)


def build_stages(cfg: RunConfig, model: nn.Module) -> list[Stage] | None:
    """The training stages of ``cfg.model`` (``METHODS[cfg.model].stages``), None for one stage."""
    return METHODS[cfg.model].stages(cfg, model)


def build_callbacks(cfg: RunConfig) -> list[TrainerCallback]:
    """TensorBoard event files in ``run_dir/tensorboard`` (``tensorboard``), early stopping on the validation
    loss of each stage (``early_stopping_patience``) and, with ``latent_probe_features='training_epoch'``, the
    latent probe's features recorded during the last epoch (:class:`TrainingEpochMeans`);
    ``log_every_steps`` is the trainer's own."""
    callbacks: list[TrainerCallback] = []
    if cfg.setting("latent_probe_features") == "training_epoch":
        callbacks.append(TrainingEpochMeans(cfg.eval_num_train))
    if cfg.tensorboard:
        callbacks.append(TensorBoard())
    if cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(cfg.early_stopping_patience))
    return callbacks


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, resume: str | bool = "auto"):
    """Train the model of ``cfg`` in ``run_dir`` with :func:`build_callbacks`; returns (model, history, train, test).
    ``resume`` as in :class:`~pyromm.train.Trainer` ("auto", "never", "must").

    With ``val_fraction`` > 0 that part of the training split is held out for the per-epoch validation loss
    (and ``restore_best``); the returned train set is the rest. Launched by ``torchrun`` (``WORLD_SIZE`` > 1), it
    trains data-parallel: each rank on its shard of every batch (``pyromm.train.distributed``).
    """
    distributed, device = data_parallel_from_env(cfg.device)
    train_set, test_set = load_data(cfg)
    check_fid_data(cfg, train_set.event_shapes)
    train_set, val_set = split_validation(train_set, cfg.val_fraction, cfg.seed)
    model = build_model(cfg, train_set.event_shapes)
    check_fid_generation(cfg, model)
    trainer = Trainer(
        model,
        build_objective(cfg),
        lr=cfg.lr,
        optimizer_kwargs={"amsgrad": True} if cfg.setting("amsgrad") else None,
        schedules=build_schedules(cfg, train_set.num_batches(cfg.batch_size, drop_last=True)),
        stages=build_stages(cfg, model),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        device=device,
        seed=cfg.seed,
        run_dir=run_dir,
        checkpoint_every=cfg.checkpoint_every,
        resume=resume,
        progress=progress,
        on_nonfinite=cfg.on_nonfinite,
        restore_best=cfg.restore_best,
        compile=cfg.compile,
        autocast=cfg.autocast,
        flush_denormals=cfg.flush_denormals,
        validate=cfg.pyro_validation,
        config={"run": cfg.to_dict()},
        distributed=distributed,
        callbacks=build_callbacks(cfg),
        log_every_steps=cfg.log_every_steps,
    )
    history = trainer.fit(train_set, val_set)
    return model, history, train_set, test_set


def classifier_cache(cfg: RunConfig) -> tuple[Path, str]:
    """The cache folder and key of the coherence classifiers of ``cfg``'s data (``Dataset.cache_key``) and
    recipe (``-resnet`` for the ResNet image classifiers of ``coherence_classifier``)."""
    seed = cfg.seed if DATASETS[cfg.dataset].seeded else 0
    key = f"{DATASETS[cfg.dataset].cache_key(cfg)}-seed{seed}-n{cfg.classifier_train_limit}-e{cfg.classifier_epochs}"
    if cfg.setting("coherence_classifier") == "resnet":
        key += "-resnet"
    return cache_root(cfg.cache_root) / "classifiers" / key, key


def coherence_classifiers(cfg: RunConfig) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    """The coherence classifiers of ``cfg``'s dataset and their test accuracies, trained on
    ``classifier_train_limit`` training samples (all by default) or loaded from the cache of an earlier run; image
    modalities get the ``coherence_classifier`` architecture (the ResNets train the MMVM code's 10 epochs, not
    ``classifier_epochs``)."""
    cache_dir, key = classifier_cache(cfg)
    dataset = DATASETS[cfg.dataset]
    clf_train, clf_test = dataset.load(cfg.replace(train_limit=cfg.classifier_train_limit, test_limit=None))
    clf_train = _limit(clf_train, cfg.classifier_train_limit)
    return train_modality_classifiers(
        clf_train, clf_test, epochs=cfg.classifier_epochs, device=cfg.device, seed=0, cache_dir=cache_dir, cache_key=key,
        spectrograms=[name for name in clf_train.modalities if name in dataset.spectrogram_modalities],
        image=cfg.setting("coherence_classifier"),
    )


def evaluation_test_set(cfg: RunConfig, test_set: MultimodalDataset) -> MultimodalDataset:
    """The test samples every metric sees: all of them, or with ``test_drop_last`` the first ⌊N/64⌋·64 (the MMVM
    code's evaluation loader, batches of 64 with the last incomplete one dropped)."""
    if not cfg.setting("test_drop_last"):
        return test_set
    kept = len(test_set) // references.REFERENCE_EVAL_BATCH * references.REFERENCE_EVAL_BATCH
    if kept == 0:
        raise ConfigError(f"test_drop_last leaves no test sample of {len(test_set)} (batches of 64)")
    return test_set.subset(slice(0, kept))


def evaluate_run(
    model: nn.Module,
    train_set,
    test_set,
    cfg: RunConfig,
    run_dir: str | Path,
    source: Mapping[str, Any] | None = None,
    fid_extractor: FeatureExtractor | None = None,
) -> dict[str, Any]:
    """Latent accuracy, coherence and reconstruction error; writes the plots, then evaluation.json (each
    atomically, holding the run directory's lock).

    ``evaluation.json`` records under ``source`` the checkpoint scored (default: the newest in ``run_dir``,
    which ``model`` must hold), its epoch, step and run identity (``pyromm.provenance``). The coherence
    classifiers train on ``classifier_train_limit`` samples of the training split (all by default, not
    ``train_limit``) and report their accuracy on the whole test split. With
    ``latent_probe_features='training_epoch'`` the latent probe fits the means recorded during the last epoch of
    training (``pyromm.evaluation.training_features``), which must come from the checkpoint scored. With
    ``fid_network``, ``fid_extractor`` (default: that network with ``fid_weights``) scores the FID of each image
    modality.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        remove_orphans(run_dir)
        source = dict(source) if source is not None else latest_source(run_dir)
        test_set = evaluation_test_set(cfg, test_set)
        check_fid_generation(cfg, model)
        probe_features = None
        if cfg.setting("latent_probe_features") == "training_epoch":
            probe_features = read_training_features(run_dir, source)
        classifiers, clf_acc = coherence_classifiers(cfg)
        device = torch.device(cfg.device)
        model.to(device)
        train_set, test_set = train_set.to(device), test_set.to(device)
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        sampler = None
        if cfg.store_latent_sampler:  # model.sample(n) after pyromm.load, for models without a prior
            sampler = fit_and_save_latent_sampler(
                model, train_set, run_dir, cfg.latent_sampler or "gmm", checkpoint=source.get("checkpoint"),
                num_train=cfg.eval_num_train, generator=torch.Generator(device="cpu").manual_seed(cfg.seed),
            )
        results = evaluate(
            model,
            train_set,
            test_set,
            classifiers,
            num_train=cfg.eval_num_train,
            generator=generator,
            latent_sampler=sampler if sampler is not None and cfg.latent_sampler is not None else cfg.latent_sampler,
            latent_max_iter=cfg.setting("latent_max_iter"),
            latent_train_features=probe_features,
        )
        results["classifier_accuracy"] = clf_acc
        if cfg.fid_network is not None:
            check_fid_data(cfg, test_set.event_shapes)
            extractor = (fid_extractor or network_features(cfg.fid_network, cfg.fid_weights)).to(device)
            names = image_modalities(test_set.event_shapes)
            fid_generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
            results["fid"] = generation_fid(model, {m: test_set.data[m] for m in names}, extractor, generator=fid_generator)
        results["config"] = cfg.to_dict()
        results["reference_settings"] = cfg.reference_settings()
        results["source"] = source
        plot_run(model, test_set, run_dir, title=run_title(cfg.model, cfg.beta, cfg.dataset))
        write_json(run_dir / EVALUATION_FILE, results)  # last: an evaluation.json says the plots are there too
    return results


def check_fid_generation(cfg: RunConfig, model: nn.Module) -> None:
    """A named error when ``fid_network`` is set for a model that generates through the stored latent sampler
    (``MultimodalVAE``) while ``store_latent_sampler`` is false, which leaves it none to generate from."""
    if cfg.fid_network is not None and needs_latent_sampler(model) and not cfg.store_latent_sampler:
        raise ConfigError(
            f"fid_network: model {cfg.model!r} generates through the latent sampler evaluation fits and stores, and "
            "store_latent_sampler = false leaves it none: set store_latent_sampler = true or remove fid_network"
        )


def check_fid_data(cfg: RunConfig, event_shapes: EventShapes) -> None:
    """A named error when ``fid_network`` is set but the data have no image modality (1|3, H, W)."""
    if cfg.fid_network is not None and not image_modalities(event_shapes):
        raise ConfigError(
            f"fid_network: dataset {cfg.dataset!r} has no image modality (1|3, H, W) (its modalities: "
            f"{dict(event_shapes)}); remove fid_network"
        )


def run(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, resume: str | bool = "auto") -> dict[str, Any]:
    """Train, then evaluate, holding ``run_dir``'s lock throughout; returns the evaluation dict ({} on the ranks
    other than 0 of a data-parallel run: rank 0 locks and evaluates)."""
    if not is_main_process():
        train(cfg, run_dir, progress=progress, resume=resume)
        return {}
    with RunLock(run_dir):
        extractor = None
        if cfg.fid_network is not None:  # before training: a missing network or weights fails now, not after it
            extractor = network_features(cfg.fid_network, cfg.fid_weights)
        model, _, train_set, test_set = train(cfg, run_dir, progress=progress, resume=resume)
        return evaluate_run(model, train_set, test_set, cfg, run_dir, fid_extractor=extractor)


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[RunConfig, nn.Module]:
    """The config and trained model of a run directory (weights loaded without unpickling)."""
    cfg, model, _ = load_run_with_source(run_dir, map_location)
    return cfg, model


def load_run_with_source(
    run_dir: str | Path, map_location: str = "cpu"
) -> tuple[RunConfig, nn.Module, dict[str, Any]]:
    """The config, trained model and ``source`` record (``pyromm.provenance``) of a run directory's newest
    readable checkpoint."""
    run_dir = Path(run_dir)
    saved = read_config(run_dir, "so pyromm cannot tell which run the directory holds")
    if not isinstance(saved.get("run"), dict):
        raise ConfigError(f"{run_dir / 'config.json'} has no 'run' section: it was not written by pyromm.run")
    cfg = RunConfig.from_saved(saved["run"], run_dir / "config.json")
    found = CheckpointDir(run_dir / "checkpoints").load_latest(map_location)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    path, state = found
    train_set, _ = load_data(cfg.replace(train_limit=1, test_limit=1))
    model = build_model(cfg, train_set.event_shapes)
    load_model_state(model, state, path)
    return cfg, model, checkpoint_source(path, state)
