"""One training run from a :class:`RunConfig`: data, model, objective, trainer and evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from pyromm import likelihoods
from pyromm import reference as references
from pyromm.config import ConfigError, RunConfig
from pyromm.data import (
    MultimodalDataset,
    cache_root,
    complete_only,
    drop_modalities,
    drop_increasing_with_label,
    load_digits_multiview,
    load_mnist_fsdd,
    load_polymnist,
)
from pyromm.distributions import maf
from pyromm.files import remove_orphans, write_json
from pyromm.identity import read_config
from pyromm.lock import RunLock
from pyromm.provenance import EVALUATION_FILE, checkpoint_source, latest_source
from pyromm.data.rats import RATS, load_rats
from pyromm.data.shapes import load_shapes
from pyromm.evaluation import evaluate, plot_run, run_title, train_modality_classifiers
import pyro.infer

from pyromm.infer import ELBOObjective, RateELBO, StratifiedIWAE, SubsetHMC, jnf_stages, telbo_stages
from pyromm.models import (
    MVAE,
    MVTCAE,
    EncoderHead,
    JointEncoder,
    JointEncoderVAE,
    MMVAE,
    MMVAEPlus,
    MMVMPrior,
    Modality,
    MultimodalVAE,
    SharedLatentVAE,
    standard_normal,
)
from pyromm.models.jnf import JNF, ProjectedEncoder
from pyromm.nn import MLPEncoder, MLPProjector, SpectrogramConvDecoder, SpectrogramConvEncoder
from pyromm.data.own import fingerprint, load_files
from pyromm.modality_options import ModalityOptions, categorical_likelihood, modality_options, networks
from pyromm.infer.stages import Stage
from pyromm.train import CheckpointDir, EpochWarmup, Linear, Trainer, schedule_from_config
from pyromm.train.callbacks import EarlyStopping, TensorBoard, TrainerCallback
from pyromm.reference_sampling import ReferenceSubsetHMC
from pyromm.train.checkpoint import load_model_state
from pyromm.train.distributed import data_parallel_from_env, is_main_process

def load_data(cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
    """The train and test splits named by ``cfg.dataset``, cut to ``train_limit``/``test_limit``.

    With ``keep_probability`` η < 1 every non-first training modality is kept per sample with probability η
    (MultiVae's incomplete-data case study); ``train_complete_only`` then keeps the complete samples only.
    With ``sound_missing_max`` p > 0 (mnist_fsdd) the training sound of digit y is missing with probability
    p · y / 9 (missing not at random), before η applies. The test split stays complete.
    """
    if cfg.dataset == "digits":
        train, test = (load_digits_multiview(s, cfg.num_views, seed=cfg.seed) for s in ("train", "test"))
    elif cfg.dataset == "rats":
        train, test = (load_rats(cfg.data_root, s, rats=RATS[: cfg.num_views]) for s in ("train", "test"))
    elif cfg.dataset == "mnist_fsdd":
        train, test = (
            load_mnist_fsdd(cfg.data_root, s, seed=0, cache_dir=cache_root(cfg.cache_root)) for s in ("train", "test")
        )
    elif cfg.dataset == "files":
        train, test = load_files(cfg)
    elif cfg.dataset == "shapes":
        train, test = (load_shapes(s, seed=0, limit=n) for s, n in (("train", cfg.train_limit), ("test", cfg.test_limit)))
    else:
        translated = cfg.dataset == "translated_polymnist"
        train, test = (
            load_polymnist(
                cfg.data_root, s, cfg.num_views, translated=translated, seed=0, cache_dir=cache_root(cfg.cache_root)
            )
            for s in ("train", "test")
        )
    train = _limit(train, cfg.train_limit)
    if cfg.sound_missing_max > 0.0:
        train = drop_increasing_with_label(train, "sound", cfg.sound_missing_max, num_classes=10, seed=cfg.seed)
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


def build_likelihood(cfg: RunConfig, event_dim: int, kind: str | None = None) -> likelihoods.Likelihood:
    """The likelihood ``kind`` (default ``cfg.likelihood``); Laplace and Normal with scale ``likelihood_scale``."""
    kind = kind or cfg.likelihood
    if kind == "laplace":
        return likelihoods.Laplace(event_dim, cfg.likelihood_scale)
    if kind == "normal":
        return likelihoods.Normal(event_dim, cfg.likelihood_scale)
    return likelihoods.Bernoulli(event_dim)


# (dataset, modality) pairs holding (1, F, T) spectrograms: spectrogram conv nets whatever cfg.network says.
SPECTROGRAM_MODALITIES = {("mnist_fsdd", "sound")}


def build_modalities(cfg: RunConfig, event_shapes: dict[str, tuple[int, ...]]) -> list[Modality]:
    """One encoder/decoder pair per modality, of the network family ``cfg.network`` (conv and resnet: (1|3, 28, 28)
    images) or, for ``SPECTROGRAM_MODALITIES``, the spectrogram conv nets, with the likelihood
    ``modality_likelihoods[name]`` (default ``cfg.likelihood``); for MMVAE+ the networks carry the shared and
    private blocks, latent_dim + private_dim (private_dim defaults to latent_dim)."""
    dim = cfg.latent_dim + (cfg.private_dim or cfg.latent_dim) if cfg.model == "mmvae_plus" else cfg.latent_dim
    chosen = cfg.modality_likelihoods or {}
    unknown = sorted(set(chosen) - set(event_shapes))
    if unknown:
        raise ConfigError(f"modality_likelihoods names unknown modality {unknown[0]!r}; modalities are {list(event_shapes)}")
    options = modality_options(cfg)
    modalities = []
    for name, shape in event_shapes.items():
        option = options.get(name, ModalityOptions())
        if (cfg.dataset, name) in SPECTROGRAM_MODALITIES:
            encoder, decoder = SpectrogramConvEncoder(dim, shape), SpectrogramConvDecoder(dim, shape)
        else:
            encoder, decoder = networks(name, option, shape, dim, cfg)
        likelihood = categorical_likelihood(option, len(shape)) or build_likelihood(
            cfg, len(shape), option.likelihood or chosen.get(name)
        )
        modalities.append(Modality(name, encoder, decoder, likelihood, shape, option.weight))
    return modalities


# Shared-latent models: the aggregation of the unimodal posteriors each trains with.
SHARED_AGGREGATIONS = {
    "avg": "avg",
    "poe": "poe",
    "moe": "moe",
    "mopoe": "mopoe_noprior",
    "mopoe_reference": "mopoe",
}
# The MMVM code's joint baselines sum the aggregated KL once per modality (docs/objectives.md).
MMVM_BASELINES = ("avg", "poe", "moe", "mopoe")


def build_model(cfg: RunConfig, event_shapes: dict[str, tuple[int, ...]]) -> MultimodalVAE | SharedLatentVAE:
    """The model named by ``cfg.model`` on the networks of ``cfg.network``, its Gaussian posteriors' scale
    floor ``posterior_scale_floor`` (docs/reference_differences.md)."""
    model = _model_of(cfg, event_shapes)
    model.scale_floor = cfg.setting("posterior_scale_floor")
    return model


def _model_of(cfg: RunConfig, event_shapes: dict[str, tuple[int, ...]]) -> MultimodalVAE | SharedLatentVAE:
    """The model of ``cfg`` as built, before the options :func:`build_model` sets."""
    torch.manual_seed(cfg.seed)
    modalities = build_modalities(cfg, event_shapes)
    if cfg.model == "mmvae":
        return MMVAE(modalities, cfg.latent_dim, learn_prior=True)
    if cfg.model == "mmvae_plus":
        return MMVAEPlus(modalities, cfg.latent_dim, cfg.private_dim or cfg.latent_dim, learn_private_prior=True)
    if cfg.model in ("jmvae", "telbo"):
        heads = {m.name: EncoderHead(build_modalities(cfg, {m.name: m.event_shape})[0].encoder) for m in modalities}
        joint_encoder = JointEncoder(heads, {n: 2 * cfg.latent_dim for n in heads}, cfg.latent_dim)
        alpha = cfg.alpha_value if cfg.model == "jmvae" else 0.0
        return JointEncoderVAE(modalities, cfg.latent_dim, joint_encoder, alpha=alpha)
    if cfg.model in ("jnf", "jnf_shared"):
        return build_jnf(cfg, modalities)
    if cfg.model == "mvae":
        return MVAE(modalities, cfg.latent_dim, cfg.num_random_subsets)
    if cfg.model == "mvtcae":
        return MVTCAE(modalities, cfg.latent_dim, cfg.alpha_value)
    if cfg.model in SHARED_AGGREGATIONS:
        scale = "modalities" if cfg.model in MMVM_BASELINES else 1.0
        return SharedLatentVAE(
            modalities,
            cfg.latent_dim,
            SHARED_AGGREGATIONS[cfg.model],
            rate_scale=scale,
            blocks=cfg.setting("mixture_blocks"),
        )
    prior = MMVMPrior(cfg.alpha_value) if cfg.model == "mmvm" else standard_normal
    return MultimodalVAE(modalities, cfg.latent_dim, conditional_prior=prior)


def default_jnf_sampler() -> SubsetHMC:
    """JNF's posterior given 1 < |S| < M modalities as the reference samples it: batched HMC on
    log π_S = Σ_{m∈S} log q_m(z | x_m) − log p(z), one chain of 100 warm-up transitions of 10 leapfrog steps per
    sample, its final state the draw."""
    return SubsetHMC(num_samples=1, num_warmup=100, num_chains=1, num_leapfrog=10, prior_power="once")


def build_jnf(cfg: RunConfig, modalities: list[Modality], subset_sampler=None) -> JNF:
    """JNF: a joint encoder on fresh copies of the encoder networks and one MAF per modality (``flow_blocks``
    MADE blocks of 3 × ``flow_hidden`` units, conditioned on [μ_m; σ_m] with ``flow_context``). jnf_shared
    replaces each unimodal encoder by an MLP on the embedding of an MLP projector to ``projection_dim``
    (L2-normalised for the 'infonce' objective). ``subset_sampler`` (subsets of 2..M−1 modalities) defaults to
    :func:`default_jnf_sampler`, or with ``jnf_subset_sampler='reference'`` to MultiVae's fixed-step sampler."""
    heads = {m.name: EncoderHead(build_modalities(cfg, {m.name: m.event_shape})[0].encoder) for m in modalities}
    joint_encoder = JointEncoder(heads, {n: 2 * cfg.latent_dim for n in heads}, cfg.latent_dim)
    if cfg.model == "jnf_shared":
        for m in modalities:
            projector = MLPProjector(
                m.event_shape, cfg.projection_dim, tuple(cfg.hidden), normalize=cfg.projector_objective == "infonce"
            )
            m.encoder = ProjectedEncoder(projector, MLPEncoder(cfg.projection_dim, cfg.latent_dim, tuple(cfg.hidden)))
    context = 2 * cfg.latent_dim if cfg.flow_context else None
    flows = {m.name: maf(cfg.latent_dim, cfg.flow_blocks, cfg.flow_hidden, context_features=context) for m in modalities}
    if subset_sampler is None:
        reference = cfg.setting("jnf_subset_sampler") == "reference"
        subset_sampler = ReferenceSubsetHMC() if reference else default_jnf_sampler()
    return JNF(modalities, cfg.latent_dim, joint_encoder, flows, subset_sampler)


def build_objective(cfg: RunConfig) -> ELBOObjective:
    """The ELBO the model of ``cfg`` trains with on its own programs (or Pyro's ``Trace_ELBO``, the MC rate, for
    ``objective='pyro'``), as the trainer calls it. Staged models (TELBO, JNF) name their stages' ELBOs in
    :func:`build_stages`."""
    return ELBOObjective(build_elbo(cfg))


def build_elbo(cfg: RunConfig) -> pyro.infer.ELBO:
    """The ``pyro.infer.ELBO`` of :func:`build_objective`."""
    if cfg.objective == "pyro":
        return pyro.infer.Trace_ELBO()
    if cfg.model == "mmvae":  # its programs nest one plate, 'data': no trial run to find it
        return StratifiedIWAE(cfg.num_importance_samples, cfg.estimator, "looser", max_plate_nesting=1)
    if cfg.model == "mmvae_plus":
        estimator = "iwae" if cfg.estimator == "elbo" else "dreg"
        detach = cfg.setting("dreg_detach") == "proper"
        return StratifiedIWAE(cfg.num_importance_samples, estimator, "looser", detach, max_plate_nesting=1)
    if cfg.model in ("jmvae", "telbo", "jnf", "jnf_shared", "mvtcae"):
        return RateELBO("analytic")
    return RateELBO(cfg.rate_mode)


def build_schedules(cfg: RunConfig, steps_per_epoch: int) -> dict[str, Any]:
    """β, α (MMVM) and KL warm-up: JMVAE's a(e) = min(1, e/warmup); MVAE's β ramps linearly per step.

    With ``beta_squared`` (independent VAEs; on in the 'mmvm-code' reference mode) the schedule gives
    hyper['beta'] = β²: the objective's rec + hyper['beta']·Σ_m KL_m is then the MMVM code's independent
    baseline, which weights each modality's KL by β and the sum by β again.
    """
    beta = cfg.beta**2 if cfg.setting("beta_squared") else cfg.beta
    schedules: dict[str, Any] = {"beta": beta}
    if cfg.model == "mmvm":
        schedules["alpha"] = schedule_from_config(cfg.alpha_schedule) if cfg.alpha_schedule else cfg.alpha_value
    if cfg.kl_warmup_epochs and cfg.model == "jmvae":
        schedules["kl_warmup"] = EpochWarmup(1.0, cfg.kl_warmup_epochs)
    elif cfg.kl_warmup_epochs:
        schedules["beta"] = Linear(0.0, beta, cfg.kl_warmup_epochs * steps_per_epoch)
    return schedules


def build_stages(cfg: RunConfig, model) -> list[Stage] | None:
    """TELBO's two stages (joint ELBO, then the unimodal encoders with all else frozen), JNF's (joint ELBO,
    then the flow posteriors) and JNF-Shared's (projectors first: DCCA or InfoNCE); None otherwise."""
    if cfg.model in ("jnf", "jnf_shared"):
        projector_epochs, joint_epochs, flow_epochs = cfg.jnf_stage_epochs
        if cfg.model == "jnf":
            return jnf_stages(model, joint_epochs, flow_epochs)
        return jnf_stages(model, joint_epochs, flow_epochs, cfg.projector_objective, projector_epochs, cfg.temperature)
    if cfg.model != "telbo":
        return None
    second = cfg.second_stage_epochs or cfg.epochs // 2
    return telbo_stages(model, cfg.epochs - second, second)


def build_callbacks(cfg: RunConfig) -> list[TrainerCallback]:
    """TensorBoard event files in ``run_dir/tensorboard`` (``tensorboard``) and early stopping on the validation
    loss of each stage (``early_stopping_patience``); ``log_every_steps`` is the trainer's own."""
    callbacks: list[TrainerCallback] = []
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
    train_set, val_set = split_validation(train_set, cfg.val_fraction, cfg.seed)
    model = build_model(cfg, train_set.event_shapes)
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
    seed = cfg.seed if cfg.dataset == "digits" else 0
    key = f"{cfg.dataset}-{cfg.num_views}views-seed{seed}-n{cfg.classifier_train_limit}-e{cfg.classifier_epochs}"
    if cfg.dataset == "files":
        key += f"-{fingerprint(cfg.data_path)}-test{cfg.test_fraction:g}"
    return cache_root(cfg.cache_root) / "classifiers" / key, key


def coherence_classifiers(cfg: RunConfig) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    """The coherence classifiers of ``cfg``'s dataset and their test accuracies, trained on
    ``classifier_train_limit`` training samples (all by default) or loaded from the cache of an earlier run."""
    cache_dir, key = classifier_cache(cfg)
    clf_train, clf_test = load_data(
        cfg.replace(train_limit=cfg.classifier_train_limit, test_limit=None, keep_probability=1.0, train_complete_only=False,
                    sound_missing_max=0.0)
    )
    return train_modality_classifiers(
        clf_train, clf_test, epochs=cfg.classifier_epochs, device=cfg.device, seed=0, cache_dir=cache_dir, cache_key=key,
        spectrograms=[name for name in clf_train.modalities if (cfg.dataset, name) in SPECTROGRAM_MODALITIES],
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
    model: MultimodalVAE | SharedLatentVAE,
    train_set,
    test_set,
    cfg: RunConfig,
    run_dir: str | Path,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Latent accuracy, coherence and reconstruction error; writes the plots, then evaluation.json (each
    atomically, holding the run directory's lock).

    ``evaluation.json`` records under ``source`` the checkpoint scored (default: the newest in ``run_dir``,
    which ``model`` must hold), its epoch, step and run identity (``pyromm.provenance``). The coherence
    classifiers train on ``classifier_train_limit`` samples of the training split (all by default, not
    ``train_limit``) and report their accuracy on the whole test split.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        remove_orphans(run_dir)
        source = dict(source) if source is not None else latest_source(run_dir)
        test_set = evaluation_test_set(cfg, test_set)
        classifiers, clf_acc = coherence_classifiers(cfg)
        device = torch.device(cfg.device)
        model.to(device)
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        results = evaluate(
            model,
            train_set.to(device),
            test_set.to(device),
            classifiers,
            num_train=cfg.eval_num_train,
            generator=generator,
            latent_sampler=cfg.latent_sampler,
            latent_max_iter=cfg.setting("latent_max_iter"),
        )
        results["classifier_accuracy"] = clf_acc
        results["config"] = cfg.to_dict()
        results["reference_settings"] = cfg.reference_settings()
        results["source"] = source
        plot_run(model, test_set.to(device), run_dir, title=run_title(cfg.model, cfg.beta, cfg.dataset))
        write_json(run_dir / EVALUATION_FILE, results)  # last: an evaluation.json says the plots are there too
    return results


def run(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, resume: str | bool = "auto") -> dict[str, Any]:
    """Train, then evaluate, holding ``run_dir``'s lock throughout; returns the evaluation dict ({} on the ranks
    other than 0 of a data-parallel run: rank 0 locks and evaluates)."""
    if not is_main_process():
        train(cfg, run_dir, progress=progress, resume=resume)
        return {}
    with RunLock(run_dir):
        model, _, train_set, test_set = train(cfg, run_dir, progress=progress, resume=resume)
        return evaluate_run(model, train_set, test_set, cfg, run_dir)


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[RunConfig, MultimodalVAE | SharedLatentVAE]:
    """The config and trained model of a run directory (weights loaded without unpickling)."""
    cfg, model, _ = load_run_with_source(run_dir, map_location)
    return cfg, model


def load_run_with_source(
    run_dir: str | Path, map_location: str = "cpu"
) -> tuple[RunConfig, MultimodalVAE | SharedLatentVAE, dict[str, Any]]:
    """The config, trained model and ``source`` record (``pyromm.provenance``) of a run directory's newest
    readable checkpoint."""
    run_dir = Path(run_dir)
    saved = read_config(run_dir, "so pyromm cannot tell which run the directory holds")
    if not isinstance(saved.get("run"), dict):
        raise ConfigError(f"{run_dir / 'config.json'} has no 'run' section: it was not written by pyromm.run")
    cfg = RunConfig.from_dict(saved["run"])
    found = CheckpointDir(run_dir / "checkpoints").load_latest(map_location)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    path, state = found
    train_set, _ = load_data(cfg.replace(train_limit=1, test_limit=1))
    model = build_model(cfg, train_set.event_shapes)
    load_model_state(model, state, path)
    return cfg, model, checkpoint_source(path, state)
