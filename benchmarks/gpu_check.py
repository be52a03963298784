"""One prepared check of pyromm on a GPU: step ratios, the paper's MMVM epoch time, grid throughput and short runs.

Run on the lent GPU machine through ``benchmarks/gpu_check.sh`` (it installs the carried wheels and sets the paths),
with the device tool: ``run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-check"], timeout_s=540)``, after
``prepare`` wrote ``.gpu-check`` in the repository root. Two commands:

* ``prepare --out .gpu-check`` (here, on a CPU, once): copies MNIST and the PolyMNIST backgrounds (md5-checked),
  trains the coherence classifiers on PolyMNIST and builds wheels of the packages the GPU image lacks (pyro-ppl,
  pyro-api, nflows), all into one ignored folder small enough to carry (< 64 MiB);
* ``run --out $OUT`` (there): every part in its own (forked) process, time-boxed, and the report
  ``$OUT/gpu_check.json`` and ``$OUT/gpu_check.md``.

Parts, in order, each with its share of ``--budget`` seconds (``SHARES``; what a part leaves goes to the later ones):
``data`` (PolyMNIST generated there, timed), ``step_ratios`` (``step_time.py`` per network and variant),
``mmvm_epoch`` (MMVM with the paper's ResNets, latent 512, batch 256: seconds per step extrapolated to an epoch,
float32 / bf16, eager / compiled, peak memory, GPU utilisation), ``grid`` (runs per hour: one at a time,
``VectorizedRuns`` with K = 8 and 16, K processes), ``final_runs`` (MMVM and independent VAEs at β = 1 for a fixed
wall budget each: latent accuracy and coherence). A part that runs past its share plus ``GRACE_S`` is killed; what
it had saved is kept, and the run goes on. ``--smoke`` runs every part for a few steps at tiny sizes (conv networks,
batch 8, aot_eager instead of inductor) in about a minute on a CPU.

    python benchmarks/gpu_check.py prepare --out .gpu-check --data-root DIR [--classifier-epochs 2]
    OUT=... bash benchmarks/gpu_check.sh [--budget 420] [--parts data mmvm_epoch ...] [--smoke --device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import gpu_check_parts as parts  # benchmarks/gpu_check_parts.py, next to this file
from common import machine, version  # benchmarks/common.py
from run_all import markdown_table  # benchmarks/run_all.py
from pyromm.data import cache_root, load_polymnist
from pyromm.data.mnist import MNIST_MD5
from pyromm.data.paths import verify_md5
from pyromm.data.polymnist import BACKGROUND_DIR, BACKGROUNDS
from pyromm.evaluation import train_modality_classifiers
from pyromm.files import atomic_open

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PREPARED = ".gpu-check"
CARRY_LIMIT = 64 * 2**20  # what the device tool carries along with the working tree
WHEELS = ("pyro-ppl", "pyro-api", "nflows")  # pyromm's dependencies missing from the GPU image
GRACE_S = 15.0  # a part may overrun its share by this much before it is killed
# Each part's share of the budget (final_runs takes what is left at its turn).
SHARES = {"data": 0.08, "step_ratios": 0.24, "mmvm_epoch": 0.24, "grid": 0.19, "final_runs": 0.25}
STEP_MODELS = list(parts.step_time.MODELS)


def group(network: str, variant: str, models: list[str], options: list[str], estimate_s: float) -> dict[str, Any]:
    """step_time.py runs of ``models`` on ``network`` with ``options``; ``estimate_s``: the seconds one model needs
    at least (a model is not started with less left)."""
    return {"network": network, "variant": variant, "models": models, "options": options, "estimate_s": estimate_s}


def step_groups(smoke: bool, backend: str) -> list[dict[str, Any]]:
    """The step_time.py runs, most wanted first."""
    compiled, bf16 = f"compiled ({backend})", ["--autocast", "bf16"]
    if smoke:
        return [group("conv", "float32 eager", ["independent", "mmvm-pyro"], [], 1),
                group("resnet", "float32 eager", ["mmvm-jensen"], [], 1),
                group("conv", "bf16 eager", ["mmvm-jensen"], bf16, 1),
                group("conv", compiled, ["independent"], ["--compile", backend], 1)]
    return [group("conv", "float32 eager", STEP_MODELS, [], 3),
            group("resnet", "float32 eager", STEP_MODELS, [], 3),
            group("conv", compiled, ["mmvm-jensen"], ["--compile", backend], 40),
            group("conv", "bf16 eager", STEP_MODELS, bf16, 3),
            group("resnet", "bf16 eager", STEP_MODELS, bf16, 3),
            group("resnet", compiled, ["mmvm-jensen"], ["--compile", backend], 40)]


# The sizes of the full check: the MMVM paper's PolyMNIST run (App. B.4), and how long each measurement runs.
FULL = dict(
    network="resnet", latent_dim=512, batch_size=256, train_limit=None, test_limit=None,
    warm_steps=3, timed_steps=60, probe_steps=10, compile_estimate_s=40,
    step_batch_size=256, step_latent_dim=64, step_options=["--steps", "5", "--rounds", "2", "--warmup", "2"],
    grid_ks=[8, 16], grid_warm_steps=2, grid_timed_steps=15, process_counts=[8, 16], process_estimate_s=40,
    eval_num_train=10000, eval_reserve_s=15, probe_reserve_s=5, min_train_s=10, final_train_s=None,
    fallback_classifier_epochs=2,
)
# --smoke: every part for a step or two at tiny sizes (a CPU test of the script, not a measurement).
SMOKE = dict(
    network="conv", latent_dim=16, batch_size=8, train_limit=512, test_limit=128,
    warm_steps=2, timed_steps=1, probe_steps=1, compile_estimate_s=1,
    step_batch_size=4, step_latent_dim=4, step_options=["--steps", "1", "--rounds", "1", "--warmup", "2"],
    grid_ks=[2, 4], grid_warm_steps=1, grid_timed_steps=2, process_counts=[2], process_estimate_s=1,
    eval_num_train=128, eval_reserve_s=3, probe_reserve_s=1, min_train_s=0.5, final_train_s=1.0,
    fallback_classifier_epochs=1,
)


def settings_for(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Everything a part needs: folders, device and the sizes of the full check or of ``--smoke``."""
    backend = "aot_eager" if args.smoke else "inductor"
    return {"device": args.device, "smoke": args.smoke, "data_root": str(args.data_root) if args.data_root else None,
            "cache_dir": str(work_dir / "cache"), "work_dir": str(work_dir), "prepared": str(args.prepared),
            "compile_backend": backend, "step_groups": step_groups(args.smoke, backend), "threads": 1,
            "worker_threads": 1, "barrier_timeout_s": 120, "final_autocast": None, **(SMOKE if args.smoke else FULL)}


# --- run ------------------------------------------------------------------------------------------------------


def part_process(name: str, settings: dict[str, Any], budget: float, out: Path) -> None:
    """A forked child's work: a new session (so that the part and every process it starts can be killed
    together), then part ``name`` until ``budget`` seconds from now; exit status 1 when the part raised."""
    os.setsid()
    deadline = time.monotonic() + budget
    log = parts.PartLog(out)
    log.save()
    try:
        parts.PARTS[name](settings, deadline, log)
    except Exception as err:
        log.fail(f"part {name}", err)
        sys.exit(1)


def run_part(name: str, settings: dict[str, Any], budget: float, hard_limit: float) -> dict[str, Any]:
    """Run part ``name`` in a forked process (this process has imported everything and never touches CUDA, so the
    child starts at once and may use the GPU) with a soft ``budget`` and a hard ``hard_limit`` (seconds): its
    status, seconds and the JSON it saved (kept when it failed or was killed)."""
    out = Path(settings["work_dir"]) / f"{name}.json"
    print(f"\n== part {name}: budget {budget:.0f} s (killed after {hard_limit:.0f} s)", flush=True)
    start = time.perf_counter()
    proc = multiprocessing.get_context("fork").Process(target=part_process, args=(name, settings, budget, out))
    proc.start()
    proc.join(hard_limit)
    if proc.is_alive():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            proc.join(5)
            if not proc.is_alive():
                break
        if proc.is_alive():  # still before its setsid: not yet the leader of its own group
            proc.kill()
            proc.join()
        status = f"killed at its time limit ({hard_limit:.0f} s)"
    else:
        status = "ok" if proc.exitcode == 0 else f"failed (exit {proc.exitcode})"
    record = json.loads(out.read_text()) if out.exists() else {"results": {}, "targets": [], "failures": [], "skipped": []}
    if status == "ok" and record["failures"]:
        status = f"ok, {len(record['failures'])} measurement(s) failed"
    seconds = time.perf_counter() - start
    print(f"== part {name}: {status} after {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": seconds, "budget_s": budget, **record}


def gpu_name() -> str:
    """The GPU's name as nvidia-smi gives it (asking torch would initialise CUDA here, before the parts fork)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError) as err:
        return f"unknown GPU (nvidia-smi: {type(err).__name__}: {err})"


def fastest_eager_autocast(mmvm: dict[str, Any]) -> str | None:
    """The autocast mode of the fastest eager variant the MMVM epoch part measured (None: float32)."""
    eager = [v for v in mmvm.get("results", {}).get("variants", []) if v["compile"] is None]
    return min(eager, key=lambda v: v["epoch_s"])["autocast"] if eager else None


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_root is None and (args.prepared / "data").is_dir():
        args.data_root = args.prepared / "data"
    work_dir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    device = torch.device(args.device)
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": os.environ.get("GPU_CHECK_COMMAND") or shlex.join([sys.executable, *sys.argv]),
        "device": args.device,
        "device_name": gpu_name() if device.type == "cuda" else f"CPU: {machine(device)['cpu']}",
        "torch": torch.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "smoke": args.smoke,
        "budget_s": args.budget,
        "data_root": str(args.data_root) if args.data_root else None,
        "prepared": str(args.prepared),
        "env": machine(torch.device("cpu")),
        "parts": {},
    }
    settings = settings_for(args, work_dir)
    chosen = [name for name in parts.PARTS if name in args.parts]
    try:
        for index, name in enumerate(chosen):
            left = args.budget - (time.monotonic() - start)
            shares = [SHARES[n] for n in chosen[index:]]
            budget = left * shares[0] / sum(shares)
            if budget < 1:
                record["parts"][name] = {"status": "skipped: the budget is spent", "seconds": 0.0, "budget_s": budget,
                                         "results": {}, "targets": [], "failures": [], "skipped": []}
                continue
            if name == "final_runs":
                settings["final_autocast"] = fastest_eager_autocast(record["parts"].get("mmvm_epoch", {}))
            record["parts"][name] = run_part(name, settings, budget, budget + GRACE_S)
    finally:
        record["wall_s"] = time.monotonic() - start
        record["targets"] = [{"part": name, **t} for name, part in record["parts"].items() for t in part["targets"]]
        write_report(args.out, record)
        if not args.keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    met = sum(t["met"] for t in record["targets"])
    print(f"\n{met} of {len(record['targets'])} targets met; wrote {args.out / 'gpu_check.json'} and "
          f"{args.out / 'gpu_check.md'} after {record['wall_s']:.0f} s", flush=True)
    return 0


# --- report ---------------------------------------------------------------------------------------------------


def write_report(out: Path, record: dict[str, Any]) -> None:
    with atomic_open(out / "gpu_check.json", "w") as handle:
        json.dump(record, handle, indent=2)
    with atomic_open(out / "gpu_check.md", "w") as handle:
        handle.write(markdown_report(record))


def yes_no(met: bool) -> str:
    return "yes" if met else "NO"


def number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def markdown_report(record: dict[str, Any]) -> str:
    env = record["env"]
    lines = [
        "# GPU check" + (" (smoke mode: tiny sizes, not a measurement)" if record["smoke"] else ""),
        markdown_table(["", ""], [
            ["date", record["date"]], ["device", f"{record['device_name']} ({record['device']})"],
            ["torch", record["torch"]], ["pyro", env["pyro"]], ["python", env["python"]],
            ["float32 matmul precision; cuDNN TF32", f"{record['float32_matmul_precision']}; {record['cudnn_allow_tf32']}"],
            ["CPU", f"{env['cpu']}, {env['cores']} cores"], ["command", f"`{record['command']}`"],
            ["budget", f"{record['budget_s']:.0f} s; the whole check took {record['wall_s']:.0f} s"],
        ]),
        "## Targets",
        markdown_table(["part", "measure", "value", "target", "met"],
                       [[t["part"], t["name"], f"{number(t['value'])}{t['unit']}", t["target"], yes_no(t["met"])]
                        for t in record["targets"]]) if record["targets"] else "No target was measured.",
        "## Parts",
        markdown_table(["part", "status", "seconds", "budget s", "skipped", "failed"],
                       [[name, p["status"], f"{p['seconds']:.0f}", f"{p['budget_s']:.0f}",
                         "; ".join(f"{s['what']} ({s['reason']})" for s in p["skipped"]) or "-",
                         "; ".join(f"{f['what']}: {f['error'][:200]}" for f in p["failures"]) or "-"]
                        for name, p in record["parts"].items()]),
    ]
    results = {name: p["results"] for name, p in record["parts"].items()}
    if results.get("data"):
        data = results["data"]
        lines += ["## PolyMNIST generated on this machine",
                  f"{data['train']['samples']} training and {data['test']['samples']} test tuples of 3 views in "
                  f"{data.get('seconds', float('nan')):.1f} s (generation and caching)."]
    if results.get("step_ratios", {}).get("groups"):
        rows = [[g["network"], g["variant"], r["model"], f"{r['pyromm_ms']:.2f}", f"{r['torch_ms']:.2f}",
                 f"{r['ratio']:.3f}",
                 "-" if r["general_path"] else f"<= {parts.STEP_RATIO_TARGET}",
                 "-" if r["general_path"] else yes_no(r["ratio"] <= parts.STEP_RATIO_TARGET)]
                for g in results["step_ratios"]["groups"] for r in g["rows"]]
        first = results["step_ratios"]["groups"][0]["env"]
        lines += ["## Step time, pyromm / hand-written (`benchmarks/step_time.py`)",
                  f"Batch {first['batch_size']}, latent {first['latent_dim']}, {first['steps'] * first['rounds']} timed "
                  f"steps per side, clock: {first['clock']}. `mmvm-pyro` is the general path (Pyro's Trace_ELBO on the programs), no target.",
                  markdown_table(["network", "variant", "model", "pyromm ms", "hand-written ms", "ratio", "target",
                                  "met"], rows)]
    if results.get("mmvm_epoch", {}).get("variants"):
        mmvm = results["mmvm_epoch"]
        rows = []
        for v in mmvm["variants"]:
            util = v["utilisation"]
            shown = (f"{util['mean_pct']:.0f} / {util['max_pct']:.0f}" if "mean_pct" in util
                     else f"not sampled: {util['skipped']}")
            memory = "-" if v["peak_memory_mib"] is None else f"{v['peak_memory_mib']:.0f}"
            rows.append([v["variant"], f"{v['step_ms']:.1f}", f"{v['epoch_s']:.1f}",
                         f"{v['projected_400_epochs_s'] / 60:.1f}",
                         f"{v['speedup_vs_paper_7h']:.1f}x", memory, shown])
        lines += ["## MMVM on 3-view PolyMNIST, the paper's ResNets (epoch time extrapolated)",
                  f"Extrapolated: {mmvm['extrapolation']}. Target: 400 epochs in at most 15 min (the paper: 7 h).",
                  markdown_table(["variant", "ms/step", "s/epoch", "400 epochs, min", "vs 7 h", "peak GPU MiB",
                                  "GPU util mean / max %"], rows)]
    if results.get("grid", {}).get("rows"):
        grid = results["grid"]
        lines += ["## Grid throughput (β × seed runs)", f"{grid['runs']}. Target: best mode >= 8x one at a time.",
                  markdown_table(["mode", "runs", "ms per step", "runs/hour", "ratio"],
                                 [[r["mode"], r["runs"], f"{1e3 * r['step_s']:.1f}", f"{r['runs_per_hour']:.2f}",
                                   f"{r['ratio']:.2f}x"] for r in grid["rows"]])]
    if results.get("final_runs", {}).get("runs"):
        final = results["final_runs"]
        lines += ["## MMVM and independent VAEs at β = 1, equal wall budgets",
                  f"Each trained for at most {final['train_budget_s']:.0f} s (whole epochs when one fits). "
                  f"Coherence classifiers: {final['classifiers']['source']}; their test accuracies "
                  + ", ".join(f"{m} {a:.3f}" for m, a in final["classifiers"]["test_accuracy"].items())
                  + f". Autocast: {final['autocast'] or 'none (float32)'}. Latent accuracy: logistic regression on "
                  f"the encoder means of {final['eval_num_train']} training samples, scored on the test split (higher "
                  "is better); coherence: cross-modal generation judged by the classifiers (higher is better).",
                  markdown_table(["model", "epochs", "steps", "train s", "latent accuracy", "coherence", "eval s"],
                                 [[r["model"], f"{r['epochs']:.2f}", r["steps"], f"{r['train_s']:.0f}",
                                   f"{r['latent_accuracy_mean']:.3f}", f"{r['coherence_cross']:.3f}", f"{r['eval_s']:.0f}"]
                                  for r in final["runs"]])]
    return "\n\n".join(lines) + "\n"


# --- prepare --------------------------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def copy_checked(source: Path, target: Path, md5: str) -> None:
    """Copy ``source`` to ``target`` (atomically) after checking its md5."""
    verify_md5(source, md5)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def build_wheels(folder: Path) -> list[str]:
    """Wheels of ``WHEELS`` at the versions installed here (pure Python: any interpreter there can install them)."""
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), *pins],
                   check=True)
    return pins


def prepare(args: argparse.Namespace) -> int:
    """Copy the data, train the coherence classifiers and build the wheels into ``args.out``."""
    out = args.out
    data = out / "data"
    for name, md5 in MNIST_MD5.items():
        copy_checked(args.data_root / "mnist" / name, data / "mnist" / name, md5)
    for name, md5 in BACKGROUNDS[: parts.VIEWS]:
        copy_checked(args.data_root / BACKGROUND_DIR / name, data / BACKGROUND_DIR / name, md5)
    limit = SMOKE["train_limit"] if args.smoke else args.classifier_train_limit
    epochs = 1 if args.smoke else args.classifier_epochs
    start = time.perf_counter()
    cache = cache_root(args.cache_dir)
    train = load_polymnist(data, "train", parts.VIEWS, limit=limit, cache_dir=cache)
    test = load_polymnist(data, "test", parts.VIEWS, limit=SMOKE["test_limit"] if args.smoke else None, cache_dir=cache)
    key = f"polymnist-{parts.VIEWS}views-seed0-n{limit}-e{epochs}"
    classifier_dir = out / "classifiers"
    _, accuracy = train_modality_classifiers(train, test, epochs=epochs, device="cpu", seed=0, cache_dir=classifier_dir,
                                             cache_key=key)
    manifest = {"cache_key": key, "epochs": epochs, "train_limit": limit, "test_accuracy": accuracy,
                "seconds": time.perf_counter() - start, "torch": torch.__version__}
    with atomic_open(classifier_dir / "manifest.json", "w") as handle:
        json.dump(manifest, handle, indent=2)
    print(f"coherence classifiers ({key}): test accuracy "
          + ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items()) + f" after {manifest['seconds']:.0f} s", flush=True)
    if not args.no_wheels:
        print("wheels: " + ", ".join(build_wheels(out / "wheels")), flush=True)
    size = folder_bytes(out)
    if size > CARRY_LIMIT:
        raise SystemExit(f"{out} holds {size / 2**20:.1f} MiB, more than the {CARRY_LIMIT // 2**20} MiB that can be carried")
    print(f"{out}: {size / 2**20:.1f} MiB. On the GPU machine, from the repository root: "
          f"GPU_CHECK_PREPARED={out} bash benchmarks/gpu_check.sh, with {out} carried (see the script's header)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("prepare", help="copy the data, train the coherence classifiers, build wheels (on a CPU)")
    pre.add_argument("--out", type=Path, default=ROOT / PREPARED, help=f"folder to carry (default {PREPARED})")
    pre.add_argument("--data-root", type=Path, required=True, help="folder holding mnist/ and polymnist_backgrounds/")
    pre.add_argument("--cache-dir", type=Path, help="where the generated PolyMNIST is cached (default $PYROMM_CACHE)")
    pre.add_argument("--classifier-epochs", type=int, default=2)
    pre.add_argument("--classifier-train-limit", type=int, help="train the classifiers on this many tuples (default all)")
    pre.add_argument("--no-wheels", action="store_true", help="do not build the wheels (the GPU image lacks pyro)")
    pre.add_argument("--smoke", action="store_true", help="512 tuples, one epoch: to test the command")
    chk = sub.add_parser("run", help="the check, on the GPU machine")
    chk.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="report folder (default $OUT)")
    chk.add_argument("--prepared", type=Path, default=ROOT / PREPARED, help="the folder `prepare` wrote")
    chk.add_argument("--data-root", type=Path, help="folder holding mnist/ and polymnist_backgrounds/ (default: "
                     "PREPARED/data, else $PYROMM_DATA)")
    chk.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke)")
    chk.add_argument("--budget", type=float, help="seconds for all parts (default 420; --smoke 240, a cap it stays "
                     "well under)")
    chk.add_argument("--parts", nargs="+", choices=list(parts.PARTS), default=list(parts.PARTS))
    chk.add_argument("--smoke", action="store_true", help="every part for a few steps at tiny sizes")
    chk.add_argument("--keep-work", action="store_true", help="keep the temporary folder (generated data, part JSON)")
    args = p.parse_args(argv)
    if args.command == "prepare":
        return prepare(args)
    if args.out is None:
        p.error("run needs --out or $OUT")
    if args.budget is None:
        args.budget = 240.0 if args.smoke else 420.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
