"""The ``pyromm`` command line: quickstart, train, evaluate and data management.

    pyromm quickstart [--out DIR] [--epochs N] [--betas B ...] [--device cpu|cuda] [--no-progress]
    pyromm train [--config FILE.toml|FILE.json] [--set KEY=VALUE ...] [--out DIR] [--no-resume] [--no-progress] [--no-eval]
    pyromm evaluate RUN_DIR [--config FILE (Python-API runs)] [--set KEY=VALUE ...]
    pyromm collect RESULTS_DIR
    pyromm methods [NAME ...] [--plugins FILE_OR_MODULE ...]
    pyromm datasets [NAME ...] [--plugins FILE_OR_MODULE ...]
    pyromm data prepare NAME [--root DIR] [--cache DIR] [--views M]    (NAME: any dataset of 'pyromm datasets')
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
from pyromm.datasets import DATASETS, Dataset
from pyromm.methods import METHODS
from pyromm.plugins import load_plugins
import torch

from pyromm.data import ChecksumError, DataFormatError, DataValidationError, IdxFormatError, cache_root, data_root
from pyromm.files import DiskFullError
from pyromm.provenance import latest_source
from pyromm.run import evaluate_run, load_data, run, train
from pyromm.saved_runs import check_evaluation_data, evaluation_setup, is_python_api_run, read_saved_config
from pyromm.sweep import beta_sweep, collect
from pyromm.train.checkpoint import CheckpointError
from pyromm.train.distributed import is_main_process
from pyromm.identity import EVALUATION_FIELDS, RunIdentityError, check_run_directory
from pyromm.lock import RunLock, RunLockedError
from pyromm.config_file import read_config_file
from pyromm.options import OptionInfo, check_options, describe, option_names

PROG = "pyromm"
QUICKSTART_MODELS = ("independent", "mmvm")
QUICKSTART_BETAS = (0.25, 1.0, 4.0)
# Measured on a loaded 2-core CPU (one torch thread): 60 epochs of both models at 3 betas, classifier
# training and evaluation included, finish in about 2 minutes; MMVM's latent accuracy and coherence
# are clearly above the independent VAEs' at every beta.
QUICKSTART_EPOCHS = 60
QUICKSTART_SETTINGS = dict(dataset="digits", num_views=3)
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
                   help="override one config field (repeatable): for a run of pyromm train, one of its evaluation "
                   f"settings ({', '.join(sorted(EVALUATION_FIELDS))}); with --config, any field")
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
    made_from = "; ".join(f"{d.name}: {' and '.join(d.sources)}" for d in DATASETS if d.sources)
    p = data_commands.add_parser(
        "prepare",
        help="verify or download a dataset's files and generate what it caches",
        description="Verify the md5s of dataset NAME's files under the data root (downloading the missing files "
        "that have an official URL and md5, naming any other missing file and where to get it), generate what it "
        "caches into the cache root (never into the data root) and check that it loads. A dataset made from others "
        f"prepares them first ({made_from}).",
    )
    p.add_argument("name", choices=DATASETS.names(), metavar="NAME", help=f"one of {', '.join(DATASETS.names())}")
    _add_root_args(p)
    with_views = ", ".join(d.name for d in DATASETS if "num_views" in option_names(d.Options))
    p.add_argument("--views", type=int, default=3, help=f"num_views of {with_views}: 1..5 (default: %(default)s)")
    p.set_defaults(func=cmd_data_prepare)
    ls = data_commands.add_parser(
        "list",
        help="show which datasets are present",
        description="Per dataset, show which of its files are present under the data root (with their md5 status) "
        "and what is cached under the cache root; then where each dataset comes from.",
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
    """The one-line message and exit status of an error pyromm can name, None for any other."""
    if isinstance(err, ConfigError):
        return f"config error: {err}", EXIT_USAGE
    if isinstance(err, RunIdentityError):
        return str(err), EXIT_USAGE
    if isinstance(err, DiskFullError):
        return f"disk full: cannot write {err.filename} ({err.strerror}); free some space and run again", EXIT_ERROR
    if isinstance(err, FloatingPointError):
        return f"training diverged: {err} (try a lower learning rate, or --set on_nonfinite=skip)", EXIT_ERROR
    if isinstance(err, ChecksumError):
        return f"{err} (the file is corrupt or a different version: delete it, or replace it with a good copy)", EXIT_ERROR
    if isinstance(err, FileNotFoundError):
        return _describe_missing(err), EXIT_ERROR
    if isinstance(err, (RunLockedError, CLIError, DataValidationError, DataFormatError, IdxFormatError, CheckpointError)):
        return str(err), EXIT_ERROR
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON: {err}", EXIT_USAGE
    if isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or os.strerror(err.errno or errno.EIO)
        return f"cannot access {err.filename}: {reason} (run with --debug for the traceback)", EXIT_ERROR
    if isinstance(err, (ValueError, OSError)):
        return f"{type(err).__name__}: {err} (run with --debug for the traceback)", EXIT_ERROR
    return None


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
        if not torch.cuda.is_available():
            raise CLIError(f"device {device!r} requested, but CUDA is not available here (use --device cpu)")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ quickstart


def cmd_quickstart(args: argparse.Namespace) -> int:
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
    """Refuse, before any data are loaded, to resume a run directory with checkpoints of another experiment
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
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.json").is_file():
        raise CLIError(f"{run_dir} is not a run directory (no config.json)")
    if args.device:
        _check_device(args.device)
    _set_threads(args.threads)
    cli_run = not is_python_api_run(read_saved_config(run_dir))
    data_config = build_config(args.config, args.overrides) if args.config or (args.overrides and not cli_run) else None
    with RunLock(run_dir):
        cfg, model = evaluation_setup(run_dir, data_config, map_location=args.device or "cpu")
        if cli_run and data_config is None:
            cfg = with_evaluation_settings(cfg, parse_overrides(args.overrides))
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


def with_evaluation_settings(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``cfg`` with the evaluation settings ``values``; a ConfigError naming any other key, which would change
    the experiment the run holds."""
    for key in values:
        if key not in EVALUATION_FIELDS:
            raise ConfigError(
                f"--set {key}: evaluating a run of pyromm train changes only its evaluation settings "
                f"({', '.join(sorted(EVALUATION_FIELDS))}); {key} would change the trained experiment: train a new "
                "run for it"
            )
    return cfg.replace(**values)


def cmd_collect(args: argparse.Namespace) -> int:
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
    if results.get("fid"):
        lines.append(f"FID (lower is better) {'':>7}   {per(results['fid'], '.2f')}")
    accuracies = results.get("classifier_accuracy") or {}
    if accuracies:
        lines.append(f"classifier accuracy  {'':>8}   {per(accuracies)}")
        weak = {m: a for m, a in accuracies.items() if a < CLASSIFIER_ACCURACY_THRESHOLD}
        if weak:
            lines.append(weak_classifier_note(weak))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ data


def _roots(args: argparse.Namespace) -> tuple[Path, Path]:
    return data_root(args.root), cache_root(args.cache)


def cmd_data_prepare(args: argparse.Namespace) -> int:
    dataset = DATASETS[args.name]
    options = _prepare_options(dataset, args.views)
    root, cache = _roots(args)
    print(f"data root:  {root}")
    print(f"cache root: {cache}")
    dataset.prepare(options, root, cache)
    return 0


def _prepare_options(dataset: Dataset, views: int) -> Any:
    """The options ``data prepare`` prepares ``dataset`` with: its defaults, with num_views = ``views`` where it has
    that option."""
    values = {"num_views": views} if "num_views" in option_names(dataset.Options) else {}
    options = dataset.Options(**values)
    try:
        check_options(options, dataset.name)
    except ValueError as err:
        raise ConfigError(f"--views: {err}") from None
    return options


def cmd_data_list(args: argparse.Namespace) -> int:
    root, cache = _roots(args)
    print(f"data root:  {root}{'' if root.is_dir() else '  (does not exist)'}")
    print(f"cache root: {cache}{'' if cache.is_dir() else '  (does not exist)'}")
    for dataset in DATASETS:
        lines = dataset.describe(root, cache)
        if lines:
            print("\n" + "\n".join(lines))
    classifiers = cache / "classifiers"
    if classifiers.is_dir():
        entries = sorted(p.name for p in classifiers.iterdir() if p.is_dir())
        if entries:
            print(f"\nCached evaluation classifiers  ({classifiers}): {len(entries)}")
    print("\nProvenance")
    for dataset in DATASETS:
        if dataset.provenance:
            print(f"  {dataset.provenance}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
