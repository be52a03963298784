"""The ``pyromm`` command line: quickstart, train, evaluate and data management.

    pyromm quickstart [--out DIR] [--epochs N] [--betas B ...] [--device cpu|cuda] [--no-progress]
    pyromm train [--config FILE.toml|FILE.json] [--set KEY=VALUE ...] [--out DIR] [--no-resume] [--no-progress] [--no-eval]
    pyromm evaluate RUN_DIR [--config FILE (Python-API runs)] [--set KEY=VALUE ...]
    pyromm collect RESULTS_DIR
    pyromm data prepare {mnist,polymnist,translated_polymnist,digits,fsdd,mnist_fsdd,rats,mnist_svhn,celeba,cub,mhd}
                        [--root DIR] [--cache DIR] [--views M]
    pyromm data list [--root DIR] [--cache DIR]

Every failure pyromm can name (bad configuration, a run directory of another experiment or in use by
another process, missing or corrupt files, unreadable checkpoints, a full disk, a NaN loss) is reported as
one line on stderr with a non-zero exit status (2 for configuration and usage errors, 1 otherwise), and
warnings as one line each; ``--debug`` (or ``$PYROMM_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Sequence

from pyromm.config import ConfigError, RunConfig, general_options
from pyromm.datasets import DATASETS
from pyromm.methods import METHODS
from pyromm.options import OptionInfo, describe
from pyromm.plugins import load_plugins
from pyromm.files import DiskFullError
from pyromm.identity import RunIdentityError, check_run_directory
from pyromm.lock import RunLock, RunLockedError
from pyromm.config_file import read_config_file

PROG = "pyromm"
QUICKSTART_MODELS = ("independent", "mmvm")
QUICKSTART_BETAS = (0.25, 1.0, 4.0)
# Measured on a loaded 2-core CPU (one torch thread): 60 epochs of both models at 3 betas, classifier
# training and evaluation included, finish in about 2 minutes; MMVM's latent accuracy and coherence
# are clearly above the independent VAEs' at every beta.
QUICKSTART_EPOCHS = 60
QUICKSTART_SETTINGS = dict(dataset="digits", num_views=3)
DATA_NAMES = ("mnist", "polymnist", "translated_polymnist", "digits", "fsdd", "mnist_fsdd")
PUBLISHED_NAMES = ("rats", "mnist_svhn", "celeba", "cub", "mhd")  # handled by pyromm.data.published
EXIT_ERROR, EXIT_USAGE = 1, 2


class CLIError(Exception):
    """A user-facing error raised by the command line itself (exit status 1)."""


# --------------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise instead of exiting, so ``main`` can return the status."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Multimodal VAEs (MMVM and friends) in Pyro.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    q = commands.add_parser(
        "quickstart",
        help="beta sweep of independent VAEs vs MMVM on the embedded digits data (no download)",
        description="Train independent VAEs and the MMVM VAE on the 3-view digits dataset (bundled with "
        "scikit-learn, no download) for several betas; print the results table and write results.csv, "
        "results.json and the trade-off plots.",
    )
    q.add_argument("--out", default="runs/quickstart", help="output directory (default: %(default)s)")
    q.add_argument("--epochs", type=_positive_int, default=QUICKSTART_EPOCHS, help="epochs per run (default: %(default)s)")
    q.add_argument("--betas", type=float, nargs="+", default=list(QUICKSTART_BETAS), metavar="BETA",
                   help="beta values (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default: %(default)s)")
    q.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default: %(default)s; the digits networks are tiny, and more "
                   "threads mostly add contention)")
    q.add_argument("--no-resume", action="store_true", help="start every run afresh instead of from its last checkpoint")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quickstart)

    t = commands.add_parser(
        "train",
        help="train (and evaluate) one run from a TOML or JSON config and --set overrides",
        description="Train one run. The config is RunConfig's defaults, updated by --config FILE, then "
        "by each --set KEY=VALUE (VALUE is parsed as JSON when it can be, else taken as a string: "
        "--set beta=0.5 --set hidden=[64,64] --set model=independent).",
        epilog=config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--config", metavar="FILE", help="FILE.toml (a [dataset] table may name your own data, "
                   "[modalities.NAME] tables their likelihood, network and weight) or FILE.json of RunConfig fields")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable)")
    t.add_argument("--out", help="run directory (default: runs/<model>_beta<beta>)")
    t.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-resume", action="store_true", help="discard existing checkpoints and start afresh")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-eval", action="store_true", help="train only, skip the evaluation")
    t.set_defaults(func=cmd_train)

    e = commands.add_parser(
        "evaluate",
        help="evaluate a trained run directory",
        description="Load the config and last checkpoint of RUN_DIR, evaluate it (latent accuracy, coherence, "
        "reconstruction), write RUN_DIR/evaluation.json and plots, and print the summary.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--config", metavar="FILE", help="a Python-API run only: FILE.toml or FILE.json naming the "
                   "evaluation data (a dataset) and settings; needs a builder recorded with pyromm.builder_config")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --config: override one config field (repeatable)")
    e.add_argument("--device", choices=("cpu", "cuda"), help="evaluate on this device (default: the run's)")
    e.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    e.set_defaults(func=cmd_evaluate)

    c = commands.add_parser(
        "collect",
        help="gather the evaluated runs of a sweep into its results table and trade-off plots",
        description="Read RESULTS_DIR/<run>/evaluation.json of every evaluated run (trained here, by a process "
        "pool or by SLURM jobs), write RESULTS_DIR/results.csv, results.json, tradeoff_latent.png and "
        "tradeoff_coherence.png, and print the table; first list each run directory without an evaluation.json "
        "as skipped, with how to evaluate it.",
    )
    c.add_argument("results_dir", metavar="RESULTS_DIR")
    c.set_defaults(func=cmd_collect)

    for kind, registry in (("methods", METHODS), ("datasets", DATASETS)):
        listing = commands.add_parser(
            kind,
            help=f"list the {kind} a config can name, with their options (type, default, doc)",
            description=f"List the {kind} a config can name, each with its one-line doc and its own options.",
        )
        listing.add_argument("names", nargs="*", metavar="NAME", help=f"only these {kind}")
        listing.add_argument("--plugins", nargs="+", default=[], metavar="FILE_OR_MODULE",
                             help="import these first (your own methods and datasets)")
        listing.set_defaults(func=cmd_list_registry, registry=registry)

    d = commands.add_parser("data", help="prepare or list datasets", description="Prepare or list datasets.")
    data_commands = d.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data_commands.required = True
    p = data_commands.add_parser(
        "prepare",
        help="verify/download MNIST, generate and cache (Translated) PolyMNIST",
        description="mnist: verify the md5s of the four idx files (downloading missing ones into the data "
        "root). polymnist / translated_polymnist: also check the backgrounds, then generate the train and "
        "test splits into the cache root (never into the data root). digits: bundled, just load it. "
        "fsdd: verify (download missing) the 3,000 FSDD recordings and cache their log-mel spectrograms. "
        "mnist_fsdd: mnist and fsdd, then pair both splits (test speakers held out of training). "
        f"{', '.join(PUBLISHED_NAMES)}: verify the published md5s, download SVHN if missing, name any other "
        "missing file and where to get it, then check that the dataset loads.",
    )
    p.add_argument("name", choices=DATA_NAMES + PUBLISHED_NAMES, metavar="NAME",
                   help=f"one of {', '.join(DATA_NAMES + PUBLISHED_NAMES)}")
    _add_root_args(p)
    p.add_argument("--views", type=int, default=3, help="number of PolyMNIST views, 1..5 (default: %(default)s)")
    p.set_defaults(func=cmd_data_prepare)
    ls = data_commands.add_parser(
        "list",
        help="show which datasets are present",
        description="Show the MNIST files (with md5 status), the PolyMNIST backgrounds, the cached PolyMNIST "
        "variants, the FSDD recordings and cached spectrograms, and where each dataset comes from.",
    )
    _add_root_args(ls)
    ls.set_defaults(func=cmd_data_list)
    return parser


def config_keys_help() -> str:
    """Every config key: the general fields, then each method's and each dataset's own options."""
    lines = ["config keys (general):"] + [_option_line(o) for o in general_options()]
    for kind, registry in (("method", METHODS), ("dataset", DATASETS)):
        for entry in registry:
            options = describe(entry.Options)
            if options:
                lines += ["", f"options of {kind} {entry.name!r}:"] + [_option_line(o) for o in options]
    lines += ["", "'pyromm methods' and 'pyromm datasets' describe each method and dataset."]
    return "\n".join(lines)


def _option_line(info: OptionInfo) -> str:
    return "\n".join(textwrap.wrap(info.line(), width=110, initial_indent="  ", subsequent_indent="      "))


def cmd_list_registry(args: argparse.Namespace) -> int:
    load_plugins(args.plugins)
    entries = [args.registry[name] for name in args.names] if args.names else list(args.registry)
    for entry in entries:
        print(f"{entry.name}: {entry.doc}")
        for info in describe(entry.Options):
            print(_option_line(info))
        if not describe(entry.Options):
            print("  (no options of its own)")
    return 0


def _add_root_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="data root (default: $PYROMM_DATA, else ~/.cache/pyromm)")
    parser.add_argument("--cache", help="cache root for generated data (default: $PYROMM_CACHE, else ~/.cache/pyromm)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(f"{err} (see '{PROG} --help')", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    debug = args.debug or os.environ.get("PYROMM_DEBUG", "") not in ("", "0")
    if debug:
        return args.func(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run_reporting_errors(args)


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """A warning as one line on stderr, without the source line."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _run_reporting_errors(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        reported = _one_line(err)
        if reported is None:
            raise
        return _fail(*reported)


def _one_line(err: Exception) -> tuple[str, int] | None:
    """The one-line message and exit status of an error pyromm can name, None for any other.

    Error classes of modules that import torch are matched only once those modules are loaded (an error of
    theirs cannot happen before), so that a config error answers without importing torch."""
    data_errors = _loaded("pyromm.data", "DataValidationError", "DataFormatError", "IdxFormatError")
    if isinstance(err, ConfigError):
        return f"config error: {err}", EXIT_USAGE
    if isinstance(err, RunIdentityError):
        return str(err), EXIT_USAGE
    if isinstance(err, DiskFullError):
        return f"disk full: cannot write {err.filename} ({err.strerror}); free some space and run again", EXIT_ERROR
    if isinstance(err, FloatingPointError):
        return f"training diverged: {err} (try a lower learning rate, or --set on_nonfinite=skip)", EXIT_ERROR
    if isinstance(err, _loaded("pyromm.data", "ChecksumError")):
        return f"{err} (the file is corrupt or a different version: delete it, or replace it with a good copy)", EXIT_ERROR
    if isinstance(err, FileNotFoundError):
        return _describe_missing(err), EXIT_ERROR
    if isinstance(err, (RunLockedError, CLIError, *data_errors, *_loaded("pyromm.train.checkpoint", "CheckpointError"))):
        return str(err), EXIT_ERROR
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON: {err}", EXIT_USAGE
    if isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or os.strerror(err.errno or errno.EIO)
        return f"cannot access {err.filename}: {reason} (run with --debug for the traceback)", EXIT_ERROR
    if isinstance(err, (ValueError, OSError)):
        return f"{type(err).__name__}: {err} (run with --debug for the traceback)", EXIT_ERROR
    return None


def _loaded(module: str, *names: str) -> tuple[type[Exception], ...]:
    """The exception classes ``names`` of ``module`` when it has been imported, else ()."""
    loaded = sys.modules.get(module)
    return () if loaded is None else tuple(getattr(loaded, name) for name in names)


def _describe_missing(err: FileNotFoundError) -> str:
    if err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    return str(err)


def _fail(message: str, status: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def _check_device(device: str) -> None:
    """A one-line error instead of a deep traceback when the requested accelerator is missing."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CLIError(f"device {device!r} requested, but CUDA is not available here (use --device cpu)")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ quickstart


def cmd_quickstart(args: argparse.Namespace) -> int:
    from pyromm.sweep import beta_sweep

    _check_device(args.device)
    _set_threads(args.threads)
    base = RunConfig(epochs=args.epochs, seed=args.seed, device=args.device, **QUICKSTART_SETTINGS)
    out = Path(args.out)
    betas = [float(b) for b in args.betas]
    runs = len(QUICKSTART_MODELS) * len(betas)
    print(f"quickstart: {runs} runs ({', '.join(QUICKSTART_MODELS)} x beta {', '.join(f'{b:g}' for b in betas)}), "
          f"{args.epochs} epochs each, 3-view digits, device {args.device}, output {out}", flush=True)
    rows = beta_sweep(base, QUICKSTART_MODELS, betas, out, progress=not args.no_progress, resume=not args.no_resume)
    print()
    print(format_table(rows))
    print()
    print(f"results:  {out / 'results.csv'}")
    print(f"          {out / 'results.json'}")
    print(f"plots:    {out / 'tradeoff_latent.png'}")
    print(f"          {out / 'tradeoff_coherence.png'}")
    print(f"runs:     {out}/<model>_beta<beta>_seed{args.seed}/ (evaluation.json, metrics.csv, checkpoints, plots)")
    return 0


CLASSIFIER_ACCURACY_THRESHOLD = 0.9


def format_table(rows: Sequence[dict[str, Any]], threshold: float = CLASSIFIER_ACCURACY_THRESHOLD) -> str:
    """The sweep's rows as a fixed-width table: model, β, latent accuracy, coherence with the lowest test accuracy of
    the classifiers that judged it, reconstruction NLL; a row whose classifiers fall below ``threshold`` is marked
    with ``!`` and a note says which, since their coherence numbers are not to be trusted."""
    lines = [f"{'model':<12}{'beta':>7}{'latent acc':>12}{'coherence':>11}{'(clf acc)':>11}{'rec NLL':>10}"]
    weak: dict[str, float] = {}
    for r in rows:
        accuracies = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("classifier_acc/") and v is not None}
        low = min(accuracies.values()) if accuracies else None
        mark = " "
        if low is not None and low < threshold:
            mark = "!"
            weak.update({m: a for m, a in accuracies.items() if a < threshold})
        lines.append(
            f"{r['model']:<12}{r['beta']:>7g}{_num(r['latent_acc'], 12, '.3f')}"
            f"{_num(r['coherence'], 11, '.3f')}{_num(low, 10, '.3f')}{mark}{_num(r['rec_error'], 10, '.1f')}"
        )
    if weak:
        lines.append(weak_classifier_note(weak, threshold))
    return "\n".join(lines)


def weak_classifier_note(weak: dict[str, float], threshold: float = CLASSIFIER_ACCURACY_THRESHOLD) -> str:
    """The warning for coherence judged by classifiers of test accuracy below ``threshold`` (modality → accuracy)."""
    listed = ", ".join(f"{m} {a:.3f}" for m, a in sorted(weak.items()))
    return (
        f"! coherence judged by classifiers below {threshold:.2f} test accuracy ({listed}): those coherence "
        "numbers are unreliable; train the classifiers longer (classifier_epochs)"
    )


def _num(value: Any, width: int, spec: str) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{spec}}"


# ----------------------------------------------------------------------------------------------- train


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["beta=0.5", "hidden=[64,64]", "model=mmvm"]`` -> ``{"beta": 0.5, "hidden": [64, 64], "model": "mmvm"}``.

    Each VALUE is parsed with ``json.loads`` and taken as the raw string when that fails.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def build_config(config_file: str | None, overrides: Sequence[str]) -> RunConfig:
    """RunConfig from an optional TOML (``pyromm.config_file``) or JSON file and ``--set`` overrides (raises
    ConfigError on any problem)."""
    values: dict[str, Any] = {}
    if config_file is not None and Path(config_file).suffix == ".toml":
        values.update(read_config_file(config_file))
    elif config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = json.loads(path.read_text())
        except ValueError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a JSON object, got {type(loaded).__name__}")
        values.update(loaded)
    values.update(parse_overrides(overrides))
    try:
        return RunConfig.from_dict(values)
    except TypeError as err:  # e.g. a comparison with a value of the wrong type inside validate()
        raise ConfigError(str(err)) from None


def check_resume_config(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse, before torch is imported, to resume a run directory with checkpoints of another experiment
    (its ``run`` config differs beyond ``RESUMABLE_FIELDS``) or without a readable config.json."""
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("epoch-*.pt")):
        check_run_directory(run_dir, {"run": cfg.to_dict()}, scope=("run",))


def cmd_train(args: argparse.Namespace) -> int:
    cfg = build_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.model}_beta{cfg.beta:g}"
    if os.environ.get("RANK", "0") != "0":  # a data-parallel rank other than 0 (torchrun): rank 0 locks
        return _train(args, cfg, out)
    with RunLock(out):
        return _train(args, cfg, out)


def _train(args: argparse.Namespace, cfg: RunConfig, out: Path) -> int:
    resume = "never" if args.no_resume else "auto"
    if not args.no_resume:
        check_resume_config(cfg, out)
    _check_device(cfg.device)
    from pyromm.run import run, train
    from pyromm.train.distributed import is_main_process

    _set_threads(args.threads)
    print(f"training {cfg.model} (beta {cfg.beta:g}) on {cfg.dataset}, {cfg.epochs} epochs, in {out}"
          + ("" if resume else " (from scratch)"), flush=True)
    if args.no_eval:
        _, history, _, _ = train(cfg, out, progress=not args.no_progress, resume=resume)
        if not is_main_process():  # a data-parallel rank other than 0 (torchrun): rank 0 reports
            return 0
        last = history[-1] if history else {}
        loss = last.get("train/loss")
        print(f"done: {len(history)} epochs" + (f", final train loss {loss:.3f}" if loss is not None else ""))
        print(f"run directory: {out} (config.json, metrics.csv, checkpoints/)")
        return 0
    results = run(cfg, out, progress=not args.no_progress, resume=resume)
    if not is_main_process():  # rank 0 evaluates and reports
        return 0
    print(format_summary(results))
    print(f"run directory: {out} (config.json, metrics.csv, checkpoints/, evaluation.json, plots)")
    return 0


# -------------------------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyromm.provenance import latest_source
    from pyromm.run import evaluate_run, load_data
    from pyromm.saved_runs import check_evaluation_data, evaluation_setup

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.json").is_file():
        raise CLIError(f"{run_dir} is not a run directory (no config.json)")
    if args.device:
        _check_device(args.device)
    _set_threads(args.threads)
    data_config = build_config(args.config, args.overrides) if args.config or args.overrides else None
    with RunLock(run_dir):
        cfg, model = evaluation_setup(run_dir, data_config, map_location=args.device or "cpu")
        if args.device:
            cfg = cfg.replace(device=args.device)
        else:
            _check_device(cfg.device)
        train_set, test_set = load_data(cfg)
        check_evaluation_data(run_dir, model, train_set.event_shapes)
        source = latest_source(run_dir)
        results = evaluate_run(model, train_set, test_set, cfg, run_dir, source)
    print(f"scored {source['checkpoint']} (epoch {source['epoch']}, step {source['step']})")
    print(f"{run_dir}: {cfg.model} (beta {cfg.beta:g}) on {cfg.dataset}")
    print(format_summary(results))
    print(f"wrote {run_dir / 'evaluation.json'}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from pyromm.sweep import collect

    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise CLIError(f"results directory {results_dir} does not exist")
    rows, skipped = collect(results_dir)
    print(format_table(rows))
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    runs = f"{len(rows)} runs" + (f" ({len(skipped)} directories skipped)" if skipped else "")
    print(f"{runs}; wrote {results_dir / 'results.csv'}, results.json, tradeoff_latent.png, tradeoff_coherence.png")
    return 0


def format_summary(results: dict[str, Any]) -> str:
    """The summary metrics of an evaluation: means, then per-modality values."""
    def per(values: dict[str, float] | None, spec: str = ".3f") -> str:
        return "  ".join(f"{m} {v:{spec}}" for m, v in (values or {}).items())

    lines = [
        f"latent accuracy      {_num(results.get('latent_acc_mean'), 8, '.3f')}   {per(results.get('latent'))}",
        f"coherence (cross)    {_num(results.get('coherence_cross_mean'), 8, '.3f')}",
        f"reconstruction NLL   {_num(results.get('rec_nll'), 8, '.2f')}   "
        f"{per(results.get('reconstruction', {}).get('joint', {}).get('nll'), '.2f')}",
        f"reconstruction MSE   {_num(results.get('rec_mse'), 8, '.4f')}",
    ]
    accuracies = results.get("classifier_accuracy") or {}
    if accuracies:
        lines.append(f"classifier accuracy  {'':>8}   {per(accuracies)}")
        weak = {m: a for m, a in accuracies.items() if a < CLASSIFIER_ACCURACY_THRESHOLD}
        if weak:
            lines.append(weak_classifier_note(weak))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ data


PROVENANCE = {
    "mnist": "MNIST (LeCun, Cortes & Burges): the four official idx files, md5-checked, from "
    "yann.lecun.com/exdb/mnist (mirror: ossci-datasets.s3.amazonaws.com/mnist)",
    "polymnist": "PolyMNIST (Sutter et al., 2021): generated here from MNIST + 5 background images "
    "(thomassutter/MoPoE), one seeded PCG64 generator; view m1 uses a stand-in background",
    "translated_polymnist": "Translated PolyMNIST (Daunhawer et al., 2022): PolyMNIST with digits shrunk to "
    "21x21 and pasted at a random offset",
    "digits": "digits: scikit-learn's bundled 8x8 digits (UCI), 1..5 textured views generated here; always "
    "available, no download",
    "fsdd": "FSDD (Jakobovski et al., CC BY-SA 4.0): 3,000 recordings of spoken digits, 6 speakers, md5-checked, "
    "from github.com/Jakobovski/free-spoken-digit-dataset; 32x128 log-mel spectrograms computed here",
    "mnist_fsdd": "MNIST + spoken digits: each MNIST image paired (seeded) with an FSDD recording of its digit; "
    "test recordings from a speaker held out of training (theo)",
}


def _roots(args: argparse.Namespace) -> tuple[Path, Path]:
    from pyromm.data import cache_root, data_root

    return data_root(args.root), cache_root(args.cache)


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num_bytes} B"


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from pyromm.data.polymnist import check_num_views

    try:
        check_num_views(args.views)
    except ValueError as err:
        raise ConfigError(f"--views: {err}") from None
    root, cache = _roots(args)
    if args.name == "digits":
        return _prepare_digits(args.views)
    print(f"data root:  {root}")
    if args.name in PUBLISHED_NAMES:
        return _prepare_published(args.name, root)
    if args.name == "fsdd":
        print(f"cache root: {cache}")
        _prepare_fsdd(root, cache)
        return 0
    _prepare_mnist(root)
    if args.name == "mnist_fsdd":
        print(f"cache root: {cache}")
        _prepare_fsdd(root, cache)
        _prepare_mnist_fsdd(root, cache)
    if args.name in ("polymnist", "translated_polymnist"):
        print(f"cache root: {cache}")
        _prepare_polymnist(root, cache, args.views, translated=args.name == "translated_polymnist")
    return 0


def _prepare_mnist(root: Path) -> None:
    """Verify the md5 of every MNIST file present (all before any download), then fetch missing ones."""
    from pyromm.data import verify_md5
    from pyromm.data.mnist import MNIST_MD5, mnist_file

    directory = root / "mnist"
    present = [name for name in MNIST_MD5 if (directory / name).exists()]
    for name in present:
        verify_md5(directory / name, MNIST_MD5[name])
    for name in MNIST_MD5:
        path = directory / name
        action = "verified  " if name in present else "downloaded"
        if name not in present:
            print(f"  downloading {name} ...", flush=True)
            mnist_file(root, name)
        print(f"  {action} {path}  {_size(path.stat().st_size)}  md5 {MNIST_MD5[name]} ok")


def _prepare_polymnist(root: Path, cache: Path, views: int, translated: bool) -> None:
    import time

    from pyromm.data import load_polymnist
    from pyromm.data.polymnist import BACKGROUNDS, load_background, polymnist_cache_dir, polymnist_metadata

    for m in range(views):
        load_background(root, m)  # md5-checked; a missing file raises FileNotFoundError naming it
        name, md5 = BACKGROUNDS[m]
        print(f"  verified   {root / 'polymnist_backgrounds' / name}  (view m{m})  md5 {md5} ok")
    seed = 0  # the seed pyromm.run.load_data uses, so training finds this cache
    directory = polymnist_cache_dir(cache, views, translated, seed)
    expected = polymnist_metadata(views, translated, seed)
    for split in ("train", "test"):
        files = [directory / f"{split}_m{m}.npy" for m in range(views)] + [directory / f"{split}_labels.npy"]
        existed = all(f.exists() for f in files) and _read_json(directory / "metadata.json") == expected
        started = time.perf_counter()
        dataset = load_polymnist(root, split, views, translated=translated, seed=seed, cache_dir=cache)
        seconds = time.perf_counter() - started
        if not all(f.exists() for f in files):
            raise CLIError(f"could not write the PolyMNIST cache in {directory}")
        size = sum(f.stat().st_size for f in files)
        state = "cached     " if existed else "generated  "
        print(f"  {state}{split:<5} {len(dataset):>6} tuples x {views} views  {_size(size):>9}  "
              f"({seconds:.1f} s)  {directory}")
    print(f"  metadata:  {directory / 'metadata.json'}  (seed {seed})")


def _prepare_published(name: str, root: Path) -> int:
    from pyromm.data import published

    if name == "mnist_svhn":
        _prepare_mnist(root)
    published.prepare(name, root)
    return 0


def _prepare_fsdd(root: Path, cache: Path) -> None:
    """md5-check every FSDD recording (downloading missing ones), then compute or find their cached spectrograms."""
    import time

    from pyromm.data.audio import SpectrogramSettings
    from pyromm.data.fsdd import (
        FSDD_DIR, RECORDINGS_DIR, fsdd_manifest, load_fsdd_spectrograms, recording_file, spectrogram_cache_dir,
        spectrogram_cache_key,
    )

    manifest = fsdd_manifest()
    directory = root / FSDD_DIR / RECORDINGS_DIR
    missing = [name for name in manifest if not (directory / name).exists()]
    if missing:
        print(f"  downloading {len(missing)} of {len(manifest)} FSDD recordings ...", flush=True)
    for name, md5 in manifest.items():
        recording_file(root, name, md5)
    print(f"  verified   {len(manifest)} recordings in {directory}  md5 ok")
    settings = SpectrogramSettings()
    cached = spectrogram_cache_dir(cache, spectrogram_cache_key(manifest, settings))
    existed = (cached / "spectrograms.npy").exists()
    started = time.perf_counter()
    spectrograms, _ = load_fsdd_spectrograms(root, cache_dir=cache, settings=settings)
    state = "cached     " if existed else "computed   "
    print(f"  {state}{spectrograms.shape[0]} spectrograms {settings.n_mels}x{settings.frames}  "
          f"({time.perf_counter() - started:.1f} s)  {cached}")


def _prepare_mnist_fsdd(root: Path, cache: Path) -> None:
    from pyromm.data import load_mnist_fsdd

    for split in ("train", "test"):
        data = load_mnist_fsdd(root, split, cache_dir=cache)
        print(f"  ready      mnist_fsdd {split:<5} {len(data):>6} pairs, {data.metadata['num_recordings']} recordings "
              f"of {', '.join(data.metadata['speakers'])}")


def _list_fsdd(root: Path, cache: Path) -> None:
    """How many FSDD recordings are present (and md5-correct), and the cached spectrogram sets."""
    from pyromm.data import md5sum
    from pyromm.data.fsdd import FSDD_DIR, RECORDINGS_DIR, fsdd_manifest

    directory = root / FSDD_DIR / RECORDINGS_DIR
    manifest = fsdd_manifest()
    print(f"\nFSDD recordings  ({directory})")
    present = [name for name in manifest if (directory / name).exists()]
    wrong = [name for name in present if md5sum(directory / name) != manifest[name]]
    size = sum((directory / name).stat().st_size for name in present)
    if present:
        print(f"  present    {len(present)} of {len(manifest)} recordings  {_size(size):>10}  "
              + (f"MD5 MISMATCH in {len(wrong)} (first: {wrong[0]})" if wrong else "md5 ok"))
    if len(present) < len(manifest):
        print(f"  missing    {len(manifest) - len(present)} of {len(manifest)} recordings")
    spectrograms = sorted((cache / FSDD_DIR).glob("spectrograms_*/spectrograms.npy"))
    for path in spectrograms:
        print(f"  cached     {path.parent.name}  {_size(path.stat().st_size):>10}")
    if not spectrograms:
        print("  none cached (pyromm data prepare fsdd | mnist_fsdd)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _prepare_digits(views: int) -> int:
    from pyromm.data import load_digits_multiview

    for split in ("train", "test"):
        data = load_digits_multiview(split, views)
        shape = "x".join(str(s) for s in next(iter(data.event_shapes.values())))
        print(f"  ready      digits {split:<5} {len(data):>5} tuples x {views} views of {shape}  "
              "(bundled with scikit-learn, nothing to download or cache)")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from pyromm.data import md5sum
    from pyromm.data.mnist import MNIST_MD5
    from pyromm.data.polymnist import BACKGROUND_DIR, BACKGROUNDS
    from pyromm.data.published import DATASETS

    root, cache = _roots(args)
    print(f"data root:  {root}{'' if root.is_dir() else '  (does not exist)'}")
    print(f"cache root: {cache}{'' if cache.is_dir() else '  (does not exist)'}")

    print("\nMNIST  (" + f"{root / 'mnist'})")
    for name, md5 in MNIST_MD5.items():
        path = root / "mnist" / name
        if not path.exists():
            print(f"  missing    {name}")
            continue
        status = "md5 ok" if md5sum(path) == md5 else f"MD5 MISMATCH (expected {md5})"
        print(f"  present    {name:<28}{_size(path.stat().st_size):>10}  {status}")

    print(f"\nPolyMNIST backgrounds  ({root / BACKGROUND_DIR})")
    for m, (name, md5) in enumerate(BACKGROUNDS):
        path = root / BACKGROUND_DIR / name
        if not path.exists():
            print(f"  missing    m{m}  {name}")
            continue
        status = "md5 ok" if md5sum(path) == md5 else f"MD5 MISMATCH (expected {md5})"
        print(f"  present    m{m}  {name:<34}{_size(path.stat().st_size):>10}  {status}")

    print(f"\nCached PolyMNIST  ({cache / 'polymnist'})")
    locations = [cache] + ([root] if root.resolve() != cache.resolve() else [])
    found = False
    for location in locations:
        for line in _cached_variants(location / "polymnist", note="" if location == cache else "  [in the data root]"):
            print(line)
            found = True
    if not found:
        print("  none       (pyromm data prepare polymnist | translated_polymnist)")

    classifiers = cache / "classifiers"
    if classifiers.is_dir():
        entries = sorted(p.name for p in classifiers.iterdir() if p.is_dir())
        if entries:
            print(f"\nCached evaluation classifiers  ({classifiers}): {len(entries)}")

    _list_fsdd(root, cache)
    for name in PUBLISHED_NAMES:
        _list_published(root, name)
    print("\ndigits: always available (bundled with scikit-learn)")
    print("\nProvenance")
    for name in DATA_NAMES:
        print(f"  {PROVENANCE[name]}")
    for name in PUBLISHED_NAMES:
        print(f"  {DATASETS[name].provenance}")
    return 0


def _list_published(root: Path, name: str) -> None:
    """Each file of a published dataset: present (size, md5 status or file count) or missing."""
    from pyromm.data.published import DATASETS, file_status

    print(f"\n{name}  ({root})")
    for entry in DATASETS[name].files:
        present, size, detail = file_status(root, entry)
        label = entry.path + ("/" if entry.folder else "")
        print(f"  present    {label:<44}{_size(size):>10}  {detail}" if present else f"  missing    {label}")


def _cached_variants(directory: Path, note: str = "") -> list[str]:
    """One line per cached PolyMNIST variant in ``directory``: name, splits with sizes, total size, seed."""
    import numpy as np

    if not directory.is_dir():
        return []
    lines = []
    variants = sorted(p for p in directory.iterdir() if p.is_dir())
    width = max((len(v.name) for v in variants), default=0) + 2
    for variant in variants:
        meta = _read_json(variant / "metadata.json")
        meta = meta if isinstance(meta, dict) else None
        size = sum(f.stat().st_size for f in variant.iterdir() if f.is_file())
        splits = []
        for split in ("train", "test"):
            labels = variant / f"{split}_labels.npy"
            if labels.exists():
                try:
                    splits.append(f"{split} {np.load(labels, mmap_mode='r').shape[0]}")
                except (OSError, ValueError):
                    splits.append(f"{split} unreadable")
        if meta is None:
            lines.append(f"  incomplete {variant.name}  {_size(size)}  (no readable metadata.json){note}")
            continue
        lines.append(
            f"  cached     {variant.name:<{width}}{', '.join(splits) or 'no splits':<24}{_size(size):>10}  "
            f"seed {meta.get('seed')}, {meta.get('num_views')} views, {meta.get('dataset')}{note}"
        )
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
