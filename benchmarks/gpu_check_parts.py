"""The measurements of ``benchmarks/gpu_check.py``, one function per part; each runs in its own process.

A part gets the run's ``settings`` (sizes, device, folders; see ``gpu_check.settings_for``), a ``deadline``
(``time.monotonic()`` value past which it starts nothing new) and a :class:`PartLog` it fills as it goes: every
``log.save()`` rewrites the part's JSON atomically, so a part killed at its time limit still leaves what it had
measured. A measurement that fails is recorded (``log.fail``) and the part goes on with the next one.

Parts:

* ``data``: PolyMNIST (3 views, train and test) generated from MNIST and the backgrounds, timed;
* ``step_ratios``: ``step_time.py`` (pyromm's step / the hand-written step of ``handwritten.py``) per network and
  variant (float32 eager, bf16 autocast, compiled), called through its ``main(argv)``;
* ``mmvm_epoch``: MMVM on PolyMNIST with the paper's ResNets through ``Trainer``: seconds per step of a fixed
  number of steps, extrapolated to an epoch, in float32 / bf16, eager / compiled; peak GPU memory; GPU
  utilisation sampled by ``nvidia-smi``;
* ``grid``: runs per hour of a β × seed grid of that run: one at a time, ``VectorizedRuns`` with K runs, and K
  processes sharing the device;
* ``final_runs``: MMVM and independent VAEs at β = 1 trained for a fixed wall budget each, then latent accuracy
  and coherence (classifiers carried from ``gpu_check.py prepare``).
"""
from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import queue
import shutil
import subprocess
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

import step_time  # benchmarks/step_time.py and grid_throughput.py, next to this file
from grid_throughput import vectorized
from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset, load_polymnist
from pyromm.evaluation import coherence, latent_classification, train_modality_classifiers
from pyromm.run import build_model, build_objective, build_schedules
from pyromm.train import Trainer
from pyromm.files import atomic_open
from pyromm.train.vectorized import stacked_batches

VIEWS = 3
TRAIN_SAMPLES = 60000  # PolyMNIST's training split
PAPER_EPOCHS = 400
PAPER_HOURS = 7.0  # the MMVM paper's reported time for one 400-epoch PolyMNIST run
TARGET_400_EPOCHS_S = 15 * 60
TARGET_GRID_RATIO = 8.0
STEP_RATIO_TARGET = 1.10
PAPER_LR = 5e-4
FINAL_MODELS = ("mmvm", "independent")
# (label, autocast, compiled) of the MMVM epoch-time variants: the eager ones first (a compiled variant spends tens of
# seconds compiling), then the one likeliest to be fastest.
MMVM_VARIANTS = (("float32, eager", None, False), ("bf16, eager", "bf16", False),
                 ("bf16, compiled", "bf16", True), ("float32, compiled", None, True))


class PartLog:
    """A part's results, targets and failures, rewritten atomically to ``path`` on every ``save``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[str, Any] = {}
        self.targets: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []

    def target(self, name: str, value: float, bound: float, below: bool, unit: str = "") -> None:
        """Record ``value`` against ``bound`` (met when value <= bound with ``below``, else value >= bound)."""
        met = value <= bound if below else value >= bound
        self.targets.append({"name": name, "value": value, "target": f"{'<=' if below else '>='} {bound:g}{unit}",
                             "unit": unit, "met": bool(met)})

    def fail(self, what: str, err: BaseException) -> None:
        print(f"FAILED {what}: {type(err).__name__}: {err}", flush=True)
        self.failures.append({"what": what, "error": f"{type(err).__name__}: {err}",
                              "traceback": traceback.format_exc()[-3000:]})
        self.save()

    def skip(self, what: str, reason: str) -> None:
        print(f"skipped {what}: {reason}", flush=True)
        self.skipped.append({"what": what, "reason": reason})
        self.save()

    def save(self) -> None:
        record = {"results": self.results, "targets": self.targets, "failures": self.failures, "skipped": self.skipped}
        with atomic_open(self.path, "w") as handle:
            json.dump(record, handle, indent=2)


class UtilisationSampler:
    """GPU utilisation (%) read by ``nvidia-smi`` every ``interval`` seconds in a background thread while the
    ``with`` block runs; off a CUDA device, or without nvidia-smi, it samples nothing and says why."""

    def __init__(self, device: torch.device, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.errors: list[str] = []
        self.skipped = None
        if device.type != "cuda":
            self.skipped = f"device is {device.type}, not a CUDA GPU"
        elif shutil.which("nvidia-smi") is None:
            self.skipped = "nvidia-smi is not on the PATH"
        index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
        self.command = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "UtilisationSampler":
        if self.skipped is None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                out = subprocess.run(self.command, capture_output=True, text=True, timeout=5, check=True)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError) as err:
                self.errors.append(f"{type(err).__name__}: {err}")
                if len(self.errors) >= 3:
                    return

    def summary(self) -> dict[str, Any]:
        """Mean and max utilisation in %, and the number of samples; or ``skipped`` with the reason."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        if not self.samples:
            return {"skipped": f"no sample read ({self.errors[-1] if self.errors else 'the block ended first'})"}
        return {"mean_pct": sum(self.samples) / len(self.samples), "max_pct": max(self.samples),
                "samples": len(self.samples), "interval_s": self.interval}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def polymnist(settings: dict, split: str) -> MultimodalDataset:
    """A split of 3-view PolyMNIST from ``settings['data_root']``, cached in ``settings['cache_dir']`` when whole."""
    limit = settings["train_limit" if split == "train" else "test_limit"]
    return load_polymnist(settings["data_root"], split, VIEWS, limit=limit, cache_dir=settings["cache_dir"])


def steps_per_epoch(settings: dict) -> int:
    """Steps of one epoch of the whole training split (drop_last, as the Trainer trains)."""
    return TRAIN_SAMPLES // settings["batch_size"]


def run_config(settings: dict, **changes: Any) -> RunConfig:
    """The MMVM paper's PolyMNIST run (ResNets, latent 512, batch 256, Adam 5e-4, β = 1, MMVM's α = 0 without
    annealing) at ``settings``' sizes."""
    base = dict(dataset="polymnist", num_views=VIEWS, model="mmvm", network=settings["network"],
                latent_dim=settings["latent_dim"], batch_size=settings["batch_size"], lr=PAPER_LR, beta=1.0,
                device=settings["device"], epochs=1)
    settings_of_run = {**base, **changes}
    alpha = {"alpha": 0.0} if settings_of_run["model"] == "mmvm" else {}
    return RunConfig(**settings_of_run, **alpha)


def trainer_for(cfg: RunConfig, model: torch.nn.Module, settings: dict, compiled: bool = False) -> Trainer:
    """A Trainer as ``pyromm.run.train`` builds it for ``cfg``, without run directory or progress bar."""
    return Trainer(model, build_objective(cfg), lr=cfg.lr, schedules=build_schedules(cfg, steps_per_epoch(settings)),
                   batch_size=cfg.batch_size, epochs=cfg.epochs, device=cfg.device, seed=cfg.seed, progress=False,
                   compile=settings["compile_backend"] if compiled else False, autocast=cfg.autocast)


def seconds_per_step(trainer: Trainer, data: MultimodalDataset, warm_steps: int, timed_steps: int,
                     during: ContextManager = contextlib.nullcontext()) -> float:
    """Train on ``warm_steps`` batches (untimed: compilation, cuDNN autotuning), then return the epoch-loop seconds
    per step of ``timed_steps`` further batches (a second ``fit``, inside ``during``: the same model and compiled
    objective, a fresh Adam)."""
    b = trainer.batch_size
    trainer.fit(data.subset(slice(0, warm_steps * b)))
    sync(trainer.device)
    with during:
        rows = trainer.fit(data.subset(slice(warm_steps * b, (warm_steps + timed_steps) * b)))
        sync(trainer.device)
    return rows[-1]["seconds"] / timed_steps


def check_time(log: PartLog, what: str, deadline: float, needed: float = 0.0) -> bool:
    """Whether ``needed`` seconds remain before ``deadline``; records the skip when not."""
    left = deadline - time.monotonic()
    if left > needed:
        return True
    log.skip(what, f"part budget spent ({left:.0f} s left, about {needed:.0f} s needed)")
    return False


# --- data ---------------------------------------------------------------------------------------------------


def part_data(settings: dict, deadline: float, log: PartLog) -> None:
    """Generate PolyMNIST here (and cache it for the other parts) and time it."""
    for split in ("train", "test"):
        start = time.perf_counter()
        data = polymnist(settings, split)
        seconds = time.perf_counter() - start
        log.results[split] = {"samples": len(data), "seconds": seconds, "cache_dir": data.metadata["cache_dir"],
                              "cached": settings[f"{split}_limit"] is None}
        print(f"PolyMNIST {split}: {len(data)} samples in {seconds:.1f} s", flush=True)
        log.save()
    log.results["seconds"] = log.results["train"]["seconds"] + log.results["test"]["seconds"]
    log.save()


# --- step ratios ----------------------------------------------------------------------------------------------


def part_step_ratios(settings: dict, deadline: float, log: PartLog) -> None:
    """``step_time.py`` per group (network, variant) and model, through ``step_time.main`` with ``--json``: one call
    per model, so that a model that fails (out of memory, say) costs only its own row."""
    device = torch.device(settings["device"])
    log.results["groups"] = []
    for group in settings["step_groups"]:
        what = f"step_time {group['network']} {group['variant']}"
        entry = {"network": group["network"], "variant": group["variant"], "commands": [], "seconds": 0.0, "rows": []}
        for model in group["models"]:
            if not check_time(log, f"{what}: {model}", deadline, group["estimate_s"]):
                break
            out = Path(settings["work_dir"]) / "step_time.json"
            argv = ["--network", group["network"], "--models", model, "--batch-size", str(settings["step_batch_size"]),
                    "--latent-dim", str(settings["step_latent_dim"]), *settings["step_options"], *group["options"],
                    "--threads", str(settings["threads"]), "--device", settings["device"], "--json", str(out)]
            command = f"python benchmarks/step_time.py {' '.join(argv)}"
            print(f"$ {command}", flush=True)
            start = time.perf_counter()
            try:
                with torch.random.fork_rng(devices=[]):
                    step_time.main(argv)
                data = json.loads(out.read_text())
            except (Exception, SystemExit) as err:
                log.fail(f"{what}: {model}", err)
                free_device_memory(device)
                continue
            if not entry["rows"]:
                entry["env"] = data["env"]
                log.results["groups"].append(entry)
            entry["commands"].append(command)
            entry["seconds"] += time.perf_counter() - start
            entry["rows"] += data["rows"]
            for row in data["rows"]:
                if not row["general_path"]:
                    log.target(f"step ratio pyromm / hand-written, {group['network']}, {group['variant']}: {row['model']}",
                               row["ratio"], STEP_RATIO_TARGET, below=True, unit="x")
            log.save()


# --- MMVM epoch time ------------------------------------------------------------------------------------------


def part_mmvm_epoch(settings: dict, deadline: float, log: PartLog) -> None:
    """Epoch time of the paper's MMVM run per variant, extrapolated from ``timed_steps`` steps; memory; utilisation."""
    device = torch.device(settings["device"])
    train = polymnist(settings, "train").to(device)
    per_epoch = steps_per_epoch(settings)
    log.results["extrapolation"] = (
        f"seconds per step = the Trainer's epoch-loop seconds over {settings['timed_steps']} steps after "
        f"{settings['warm_steps']} untimed ones (a compiled objective compiles during those), times {per_epoch} steps "
        f"per epoch ({TRAIN_SAMPLES} // {settings['batch_size']}, the last partial batch dropped); data resident on "
        f"the device; evaluation not included"
    )
    log.results["steps_per_epoch"] = per_epoch
    log.results["variants"] = []
    for label, mode, compiled in MMVM_VARIANTS:
        if not check_time(log, f"mmvm epoch {label}", deadline, settings["compile_estimate_s"] if compiled else 5):
            continue
        try:
            free_device_memory(device)
            reset_peak_memory(device)
            cfg = run_config(settings, autocast=mode, compile=compiled)
            trainer = trainer_for(cfg, build_model(cfg, train.event_shapes), settings, compiled)
            sampler = UtilisationSampler(device)
            step_s = seconds_per_step(trainer, train, settings["warm_steps"], settings["timed_steps"], during=sampler)
            del trainer
        except Exception as err:
            log.fail(f"mmvm epoch {label}", err)
            continue
        epoch_s = step_s * per_epoch
        row = {"variant": label, "autocast": mode, "compile": settings["compile_backend"] if compiled else None,
               "step_ms": 1e3 * step_s, "epoch_s": epoch_s, "projected_400_epochs_s": PAPER_EPOCHS * epoch_s,
               "speedup_vs_paper_7h": PAPER_HOURS * 3600 / (PAPER_EPOCHS * epoch_s),
               "peak_memory_mib": peak_memory_mib(device), "utilisation": sampler.summary(),
               "timed_steps": settings["timed_steps"]}
        print(f"mmvm {label}: {row['step_ms']:.1f} ms/step, {epoch_s:.1f} s/epoch, "
              f"400 epochs {row['projected_400_epochs_s'] / 60:.1f} min", flush=True)
        log.results["variants"].append(row)
        log.target(f"MMVM 400 epochs (projected), {label}", row["projected_400_epochs_s"] / 60,
                   TARGET_400_EPOCHS_S / 60, below=True, unit=" min")
        log.save()


# --- grid throughput ------------------------------------------------------------------------------------------


def grid_data(settings: dict, batch_size: int) -> MultimodalDataset:
    """The training tuples of ``grid_warm_steps`` + ``grid_timed_steps`` batches."""
    steps = settings["grid_warm_steps"] + settings["grid_timed_steps"]
    return polymnist({**settings, "train_limit": steps * batch_size}, "train")


def grid_configs(settings: dict, k: int) -> list[RunConfig]:
    """K = 2·n runs: n β values 2^(j - n/2), j = 0..n-1, times seeds 0 and 1."""
    n = k // 2
    return [run_config(settings, beta=2.0 ** (j - n // 2), seed=seed) for j in range(n) for seed in (0, 1)]


def vectorized_seconds_per_step(configs: list[RunConfig], data: MultimodalDataset, settings: dict) -> float:
    """Seconds per step of K runs in one ``VectorizedRuns`` (all K runs advance one step), after warm-up steps."""
    device = torch.device(settings["device"])
    runs, hyper, generators = vectorized(configs, data)
    batches = stacked_batches(data, generators, configs[0].batch_size)
    warm, timed = batches[: settings["grid_warm_steps"]], batches[settings["grid_warm_steps"]:]
    torch.manual_seed(configs[0].seed)
    for batch in warm:
        runs.step(batch, hyper)
    sync(device)
    start = time.perf_counter()
    for batch in timed:
        runs.step(batch, hyper)
    sync(device)
    return (time.perf_counter() - start) / len(timed)


def process_worker(settings: dict, cfg: dict, barrier, results) -> None:
    """One run of the grid in its own process: warm up, wait for every worker, then train ``grid_timed_steps``
    steps and put (start, end) monotonic seconds on ``results``."""
    torch.set_num_threads(settings["worker_threads"])
    config = RunConfig.from_dict(cfg)
    data = grid_data(settings, config.batch_size).to(config.device)
    trainer = trainer_for(config, build_model(config, data.event_shapes), settings)
    trainer.fit(data.subset(slice(0, settings["grid_warm_steps"] * config.batch_size)))
    sync(trainer.device)
    barrier.wait(timeout=settings["barrier_timeout_s"])
    start = time.monotonic()
    trainer.fit(data.subset(slice(settings["grid_warm_steps"] * config.batch_size, None)))
    sync(trainer.device)
    results.put((start, time.monotonic()))


def processes_seconds_per_step(configs: list[RunConfig], settings: dict, deadline: float) -> float:
    """Wall seconds per step of K runs in K spawned processes sharing the device: from the first worker's start to
    the last worker's end, over ``grid_timed_steps``; every worker is killed at ``deadline``."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(configs)), context.Queue()
    workers = [context.Process(target=process_worker, args=(settings, cfg.to_dict(), barrier, results), daemon=True)
               for cfg in configs]
    for worker in workers:
        worker.start()
    spans = []
    try:
        while len(spans) < len(workers):
            crashed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if crashed:
                raise RuntimeError(f"{len(crashed)} of {len(workers)} worker processes exited with codes {crashed}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(spans)} of {len(workers)} worker processes finished before the part's deadline")
            try:
                spans.append(results.get(timeout=1.0))
            except queue.Empty:
                pass
    finally:
        for worker in workers:
            if len(spans) < len(workers):  # one failed or the time is up: the others would wait at the barrier
                worker.kill()
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return (max(end for _, end in spans) - min(start for start, _ in spans)) / settings["grid_timed_steps"]


def part_grid(settings: dict, deadline: float, log: PartLog) -> None:
    """Runs per hour of 400-epoch runs: one at a time (Trainer), vectorized (K runs), K processes sharing the device."""
    device = torch.device(settings["device"])
    b = settings["batch_size"]
    data = grid_data(settings, b).to(device)
    run_steps = PAPER_EPOCHS * steps_per_epoch(settings)
    log.results["runs"] = (f"MMVM, {settings['network']} networks, latent {settings['latent_dim']}, batch {b}, "
                           f"{PAPER_EPOCHS} epochs = {run_steps} steps per run; "
                           f"runs/hour = K * 3600 / (seconds per step * {run_steps})")
    log.results["rows"] = []

    def add(mode: str, k: int, step_s: float) -> None:
        row = {"mode": mode, "runs": k, "step_s": step_s, "runs_per_hour": k * 3600 / (step_s * run_steps)}
        if log.results["rows"]:
            row["ratio"] = row["runs_per_hour"] / log.results["rows"][0]["runs_per_hour"]
        else:
            row["ratio"] = 1.0
        print(f"grid {mode}: {1e3 * step_s:.1f} ms per step, {row['runs_per_hour']:.2f} runs/hour, "
              f"x{row['ratio']:.2f}", flush=True)
        log.results["rows"].append(row)
        log.save()

    cfg = run_config(settings)
    try:
        trainer = trainer_for(cfg, build_model(cfg, data.event_shapes), settings)
        add("one at a time (Trainer)", 1,
            seconds_per_step(trainer, data, settings["grid_warm_steps"], settings["grid_timed_steps"]))
        del trainer
    except Exception as err:
        log.fail("grid one at a time", err)
        return
    for k in settings["grid_ks"]:
        if not check_time(log, f"grid vectorized K = {k}", deadline, 5):
            continue
        try:
            free_device_memory(device)
            add(f"vectorized, K = {k}", k, vectorized_seconds_per_step(grid_configs(settings, k), data, settings))
        except Exception as err:
            log.fail(f"grid vectorized K = {k}", err)
    free_device_memory(device)
    for k in settings["process_counts"]:
        if not check_time(log, f"grid {k} processes", deadline, settings["process_estimate_s"]):
            continue
        try:
            step_s = processes_seconds_per_step(grid_configs(settings, k), settings, deadline)
            add(f"{k} processes sharing the device", k, step_s)
        except Exception as err:
            log.fail(f"grid {k} processes", err)
    if len(log.results["rows"]) > 1:
        best = max(log.results["rows"][1:], key=lambda r: r["ratio"])
        log.target(f"grid runs/hour against one at a time, best mode ({best['mode']})", best["ratio"], TARGET_GRID_RATIO,
                   below=False, unit="x")
        log.save()


# --- final runs -----------------------------------------------------------------------------------------------


def coherence_classifiers(settings: dict, train: MultimodalDataset, test: MultimodalDataset) -> tuple[dict, dict, str]:
    """The classifiers carried from ``gpu_check.py prepare`` (their manifest names the cache key), else ones trained
    here for ``fallback_classifier_epochs``; with their test accuracies and where they came from."""
    manifest_path = Path(settings["prepared"]) / "classifiers" / "manifest.json"
    device = settings["device"]
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        sidecars = [manifest_path.parent / f"classifier_{m}.json" for m in train.modalities]
        key = manifest["cache_key"]
        carried = all(p.is_file() and json.loads(p.read_text()).get("cache_key") == key for p in sidecars)
        source = (f"carried ({manifest_path.parent}, {key})" if carried
                  else f"trained here: the carried ones in {manifest_path.parent} do not match {key}")
        classifiers, accuracy = train_modality_classifiers(
            train, test, epochs=manifest["epochs"], device=device, seed=0, cache_dir=manifest_path.parent, cache_key=key)
        return classifiers, accuracy, source
    epochs = settings["fallback_classifier_epochs"]
    classifiers, accuracy = train_modality_classifiers(train, test, epochs=epochs, device=device, seed=0)
    return classifiers, accuracy, f"trained here for {epochs} epoch(s): no {manifest_path}"


def budgeted_run(cfg: RunConfig, train: MultimodalDataset, settings: dict, budget_s: float) -> dict:
    """Train a fresh model of ``cfg`` for about ``budget_s`` seconds of training steps: the step time is probed on a
    throwaway model first, then the run gets as many whole epochs as fit (or, when not even one does, one pass over
    as many batches as fit)."""
    probe = trainer_for(cfg, build_model(cfg, train.event_shapes), settings)
    step_s = seconds_per_step(probe, train, settings["warm_steps"], settings["probe_steps"])
    del probe
    free_device_memory(torch.device(cfg.device))
    per_epoch = train.num_batches(cfg.batch_size, drop_last=True)
    steps = max(1, int(budget_s / step_s))
    epochs = steps // per_epoch
    data = train if epochs >= 1 else train.subset(slice(0, steps * cfg.batch_size))
    model = build_model(cfg, train.event_shapes)
    trainer = trainer_for(cfg.replace(epochs=max(1, epochs)), model, settings)
    start = time.perf_counter()
    history = trainer.fit(data)
    sync(trainer.device)
    return {"model": model, "probe_step_ms": 1e3 * step_s, "epochs": epochs if epochs >= 1 else steps / per_epoch,
            "steps": trainer.step, "train_s": time.perf_counter() - start, "final_train_loss": history[-1]["train/loss"]}


def part_final_runs(settings: dict, deadline: float, log: PartLog) -> None:
    """MMVM and independent VAEs at β = 1, each given the same training budget (an equal share of the time left
    after loading, less the evaluations), then evaluated."""
    device = torch.device(settings["device"])
    start = time.perf_counter()
    train, test = polymnist(settings, "train").to(device), polymnist(settings, "test").to(device)
    classifiers, accuracy, source = coherence_classifiers(settings, train, test)
    log.results["classifiers"] = {"source": source, "test_accuracy": accuracy, "seconds": time.perf_counter() - start}
    log.results["autocast"] = settings["final_autocast"]
    log.results["eval_num_train"] = settings["eval_num_train"]
    log.results["runs"] = []
    log.save()
    eval_s = settings["eval_reserve_s"]
    share = (deadline - time.monotonic()) / len(FINAL_MODELS) - eval_s - settings["probe_reserve_s"]
    if settings["final_train_s"] is not None:
        share = min(share, settings["final_train_s"])
    log.results["train_budget_s"] = share
    for index, name in enumerate(FINAL_MODELS):
        left = deadline - time.monotonic()
        budget = min(share, (left - (len(FINAL_MODELS) - index) * eval_s) / (len(FINAL_MODELS) - index)
                     - settings["probe_reserve_s"])
        if budget < settings["min_train_s"]:
            log.skip(f"final run {name}", f"{left:.0f} s left: under {settings['min_train_s']} s of training")
            continue
        cfg = run_config(settings, model=name, autocast=settings["final_autocast"])
        try:
            run = budgeted_run(cfg, train, settings, budget)
            eval_start = time.perf_counter()
            latent = latent_classification(run["model"], train, test, num_train=settings["eval_num_train"])
            coherent = coherence(run["model"], test, classifiers, generator=torch.Generator().manual_seed(0))
            eval_s = time.perf_counter() - eval_start
        except Exception as err:
            log.fail(f"final run {name}", err)
            continue
        del run["model"]
        free_device_memory(device)
        row = {"model": name, "beta": cfg.beta, "train_budget_s": budget, **run, "eval_s": eval_s,
               "latent_accuracy": latent, "latent_accuracy_mean": sum(latent.values()) / len(latent),
               "coherence_cross": coherent["cross"], "coherence_pair": coherent["pair"]}
        print(f"final {name}: {row['epochs']:.2f} epochs in {row['train_s']:.0f} s, latent accuracy "
              f"{row['latent_accuracy_mean']:.3f}, coherence {row['coherence_cross']:.3f}", flush=True)
        log.results["runs"].append(row)
        log.save()
    runs = {r["model"]: r for r in log.results["runs"]}
    if set(runs) == set(FINAL_MODELS):
        for key, label in (("coherence_cross", "coherence"), ("latent_accuracy_mean", "latent accuracy")):
            log.target(f"MMVM {label} - independent {label} (beta = 1, equal wall budget)",
                       runs["mmvm"][key] - runs["independent"][key], 0.0, below=False)
        log.save()


PARTS: dict[str, Callable[[dict, float, PartLog], None]] = {
    "data": part_data,
    "step_ratios": part_step_ratios,
    "mmvm_epoch": part_mmvm_epoch,
    "grid": part_grid,
    "final_runs": part_final_runs,
}
