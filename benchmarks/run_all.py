"""Run the whole benchmark suite and print one table of the ratios measured in this run.

Each benchmark runs as a subprocess that writes a JSON file (``--json``); this script only collects. The suite:

* ``step_time.py`` with MLP and with conv networks: pyromm's step against a hand-written PyTorch step of the same
  math on the same networks, for every built-in objective (target: pyromm / hand-written ≤ 1.10);
* ``multivae_compare.py``, with ``.bench-venv/bin/python`` (MultiVae 1.0.3 lives only there; skipped, with the
  command that sets it up, when the environment is absent): pyromm against MultiVae (target: MultiVae / pyromm ≥ 2);
* ``subset_sampler.py``: batched HMC against MultiVae's JNF subset sampler (target: ESS/s ratio ≥ 10);
* ``data_pipeline.py``: samples per second delivered to the device against those a training step consumes
  (target ≥ 10, i.e. ≫ 1), and the peak memory of a PolyMNIST-sized MMVM run;
* ``modality_scaling.py`` with MLP and with conv networks: per-step cost at M = 2, 3, 5, 10 (target: growth
  exponent ≤ 1.2, i.e. linear, except MMVM's M² closed-form KL pairs: ≤ 2; and per encoder/decoder pass ≤ 0.2:
  nothing grows faster than the network passes the model's math makes);
* ``grid_throughput.py``: runs per hour of a small grid, vectorized against one at a time (no target).

It records the machine (CPU model, cores, GPU), torch / pyro / nflows versions, thread count, date and load
average, prints the combined table and writes ``benchmarks/RESULTS.md`` (every benchmark's own table, then the
explanations kept in ``benchmarks/RESULTS_NOTES.md``) and ``benchmarks/RESULTS.json`` (everything the benchmarks
wrote). ``--quick`` runs each benchmark briefly (fewer steps, smaller conv batches for the scaling and step-time
runs): about 10 minutes instead of about an hour on one CPU thread. Ratios within one run are what count: on a
shared machine absolute times move with the load, and a quick run's few steps leave its ratios noisier.

    OMP_NUM_THREADS=1 python benchmarks/run_all.py --threads 1 [--quick] [--device cpu|cuda] [--only step_time_mlp ...]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import machine  # benchmarks/common.py, next to this script

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
SETUP_VENV = "bash benchmarks/setup_multivae_env.sh"


@dataclass
class Job:
    """One benchmark run: ``script`` with ``base`` options, then ``full`` ones, or ``quick`` ones under ``--quick``."""

    key: str
    title: str
    script: str
    base: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    python: str = sys.executable


QUICK_STEPS = ["--steps", "3", "--rounds", "2", "--warmup", "1"]
JOBS = [
    Job("step_time_mlp", "pyromm vs hand-written PyTorch (MLP networks)", "step_time.py", ["--network", "mlp"],
        quick=QUICK_STEPS),
    Job("step_time_conv", "pyromm vs hand-written PyTorch (PolyMNIST conv networks)", "step_time.py",
        ["--network", "conv"], quick=["--batch-size", "32", *QUICK_STEPS]),
    Job("multivae", "pyromm vs MultiVae 1.0.3", "multivae_compare.py",
        quick=["--steps", "2", "--rounds", "1", "--warmup", "1", "--budget", "5"], python=str(VENV_PYTHON)),
    Job("subset_sampler", "batched HMC vs MultiVae's JNF subset sampler", "subset_sampler.py",
        quick=["--num-targets", "16", "--warmup", "100", "--samples", "250"]),
    Job("data_pipeline", "data pipeline vs training step", "data_pipeline.py",
        quick=["--batches", "50", "--steps", "3", "--warmup", "1"]),
    Job("scaling_mlp", "per-step cost against M (MLP networks)", "modality_scaling.py", ["--network", "mlp"],
        quick=["--steps", "3", "--rounds", "2", "--warmup", "1"]),
    Job("scaling_conv", "per-step cost against M (PolyMNIST conv networks)", "modality_scaling.py",
        ["--network", "conv", "--latent-dim", "64"], ["--batch-size", "32", "--steps", "3", "--rounds", "2"],
        ["--batch-size", "16", "--steps", "1", "--rounds", "1", "--warmup", "1"]),
    Job("grid", "grid throughput (runs per hour)", "grid_throughput.py", quick=["--epochs", "1", "--seeds", "0"]),
]
# Growth-exponent targets: linear, except MMVM's M² closed-form KL pairs; per network pass: flat (the objective
# adds nothing that grows faster than the network passes its math prescribes).
EXPONENT_TARGET = {"mmvm": 2.0, "mopoe": 1.2, "mmvae": 1.2}


def run_job(job: Job, args, tmp: Path) -> dict:
    """Run one benchmark; its command, wall seconds, exit status and JSON (or the end of its stderr)."""
    out = tmp / f"{job.key}.json"
    chosen = job.quick if args.quick else job.full
    options = [*job.base, *chosen, "--threads", str(args.threads), "--device", args.device]
    command = [job.python, str(BENCH / job.script), *options, "--json", str(out)]
    interpreter = "python" if job.python == sys.executable else str(Path(job.python).relative_to(ROOT))
    shown = shlex.join([interpreter, f"benchmarks/{job.script}", *options])
    print(f"\n== {job.title}\n$ {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = {"title": job.title, "command": shown, "seconds": seconds, "returncode": proc.returncode}
    print(proc.stdout, end="", flush=True)
    if proc.returncode == 0 and out.exists():
        result["data"] = json.loads(out.read_text())
    else:
        result["error"] = proc.stderr[-3000:]
        print(f"FAILED (exit {proc.returncode}):\n{result['error']}", flush=True)
    print(f"({result['seconds']:.0f} s)", flush=True)
    return result


def ratio_rows(results: dict) -> list[dict]:
    """The combined table: benchmark, case, measured value, target and whether it is met (None: no target)."""
    rows = []

    def add(benchmark, case, value, target=None, unit="x", above=True):
        met = None if target is None else (value >= target if above else value <= target)
        shown = "-" if target is None else f"{'>=' if above else '<='} {target}"
        rows.append({"benchmark": benchmark, "case": case, "value": value, "unit": unit, "target": shown, "met": met})

    def data(key):
        return results.get(key, {}).get("data", {})

    for key in ("step_time_mlp", "step_time_conv"):
        for r in data(key).get("rows", []):
            target = None if r.get("general_path") else 1.10
            add(f"pyromm / hand-written, {data(key)['env']['network']}", r["model"], r["ratio"], target, above=False)
    for r in data("multivae").get("rows", []):
        add("MultiVae / pyromm", r["model"], r["ratio"], 2)
    sampler = data("subset_sampler").get("rows", {})
    for name, r in sampler.items():
        if name != "batched":
            target = 10 if name == "reference (final states)" else None
            add("sampler ESS/s, batched / reference", name, sampler["batched"]["ess_per_s"] / r["ess_per_s"], target)
    pipeline = data("data_pipeline")
    for r in pipeline.get("rows", []):
        add("data delivered / consumed", f"{r['dataset']} ({r['placement']}) vs {r['model']}", r["ratio"], 10)
    if pipeline:
        samples = pipeline["rows"][0]["samples"]
        add("peak RSS, PolyMNIST MMVM run", f"{samples} samples", pipeline["memory"]["rss_after_steps_mib"], unit="MiB")
    for key in ("scaling_mlp", "scaling_conv"):
        network = data(key).get("settings", {}).get("network")
        for model, fit in data(key).get("fits", {}).items():
            add(f"growth exponent in M, {network}", model, fit["exponent"], EXPONENT_TARGET[model], "", above=False)
            add(f"growth exponent in M per network pass, {network}", model, fit["exponent_per_pass"], 0.2, "",
                above=False)
    for r in data("grid").get("rows", []):
        if r["mode"].startswith("vectorized"):
            add("grid runs/hour vs one at a time", r["mode"], r["ratio"])
    return rows


def fmt(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if unit == "MiB" else f"{value:.2f}{unit}"


def ratio_table(rows: list[dict]) -> str:
    width = max(len(r["benchmark"]) + len(r["case"]) for r in rows) + 3
    lines = [f"{'benchmark: case':<{width}}{'value':>10}{'target':>10}{'met':>6}"]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        name = f"{r['benchmark']}: {r['case']}"
        lines.append(f"{name:<{width}}{fmt(r['value'], r['unit']):>10}{r['target']:>10}{met:>6}")
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}") if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def section(key: str, data: dict) -> str:
    """A benchmark's own table, in markdown."""
    rows = data.get("rows", [])
    if key.startswith("step_time"):
        return markdown_table(
            ["model", "pyromm ms", "torch ms", "ratio", "wall ratio", "loss err", "grad err"],
            [[r["model"], r["pyromm_ms"], r["torch_ms"], r["ratio"], r["wall_ratio"], f"{r['loss_err']:.1e}",
              f"{r['grad_err']:.1e}"] for r in rows])
    if key == "multivae":
        return markdown_table(
            ["model", "pyromm ms", "MultiVae ms", "MultiVae / pyromm", "wall ratio", "steps/side"],
            [[r["model"], r["pyromm_ms"], r["multivae_ms"], r["ratio"], r["wall_ratio"], r["steps_per_side"]]
             for r in rows])
    if key == "subset_sampler":
        return markdown_table(
            ["sampler", "draws/target", "wall s", "cpu s", "ESS min", "ESS/s", "mean err", "std err"],
            [[name, r["draws_per_target"], r["wall_s"], r["cpu_s"], round(r["ess_min"]), r["ess_per_s"], r["mean_err"],
              r["std_err"]] for name, r in rows.items()])
    if key == "data_pipeline":
        table = markdown_table(
            ["dataset", "source", "placement", "samples", "MiB", "model", "delivered/s", "consumed/s", "ratio"],
            [[r["dataset"], r["source"], r["placement"], r["samples"], r["dataset_mib"], r["model"],
              round(r["delivered_per_s"]), round(r["consumed_per_s"]), r["ratio"]] for r in rows])
        memory = ", ".join(f"{k.removesuffix('_mib').replace('_', ' ')} {v:.0f} MiB" for k, v in data["memory"].items())
        return f"{table}\n\nMemory (process peak RSS at each point; on CUDA also the allocator's peak): {memory}."
    if key.startswith("scaling"):
        table = markdown_table(
            ["model", "M", "ms/step", "ms/step/M", "enc passes", "dec passes", "ms/pass"],
            [[r["model"], r["M"], r["ms"], r["ms_per_M"], r["encoder_passes"], r["decoder_passes"], r["ms_per_pass"]]
             for r in rows])
        fits = "; ".join(f"{m} {f['exponent']:.2f} (last two Ms: {f.get('exponent_last_two', float('nan')):.2f})"
                         for m, f in data["fits"].items())
        return f"{table}\n\nGrowth exponents (log-log slope of step time against M): {fits}."
    if key == "grid":
        return markdown_table(
            ["mode", "cores", "wall s", "runs/hour", "ratio"],
            [[r["mode"], r["cores"], r["seconds"], round(r["runs_per_hour"]), r["ratio"]] for r in rows])
    return ""


def write_results(args, env: dict, results: dict, rows: list[dict], command: str) -> None:
    gpu = f", GPU {env['gpu']}" if env["gpu"] else ""
    parts = [
        "# Benchmark results",
        f"Written by `{command}`: rerun it to refresh this file. `{args.out.with_suffix('.json').name}` next to it "
        "holds every number the benchmarks wrote; the notes at the end come from `benchmarks/RESULTS_NOTES.md`.",
        f"* date: {env['date']}\n* device: {env['device']} ({env['cpu']}, {env['cores']} cores{gpu})\n"
        f"* threads: {env['threads']} torch thread(s) per benchmark process\n"
        f"* versions: python {env['python']}, torch {env['torch']}, pyro {env['pyro']}, nflows {env['nflows']}\n"
        f"* load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in env['loadavg'])}; at end: "
        f"{', '.join(f'{x:.2f}' for x in env['loadavg_end'])}\n* mode: {'--quick' if args.quick else 'full'}",
        "## Ratios measured in this run",
        f"```\n{ratio_table(rows)}\n```" if rows else "No benchmark produced results.",
    ]
    for key, result in results.items():
        parts.append(f"## {result['title']}")
        parts.append(f"`{result['command']}` ({result['seconds']:.0f} s)")
        if "data" in result:
            parts.append(section(key, result["data"]))
        else:
            parts.append(f"Not measured: {result.get('skipped') or 'failed, exit ' + str(result['returncode'])}.")
            if "error" in result:
                parts.append(f"```\n{result['error'][-1500:]}\n```")
    notes = BENCH / "RESULTS_NOTES.md"
    if notes.exists():
        parts.append(notes.read_text().strip())
    args.out.write_text("\n\n".join(parts) + "\n")
    summary = {"env": env, "command": command, "quick": args.quick, "ratios": rows, "benchmarks": results}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs of every benchmark (minutes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per benchmark process")
    p.add_argument("--only", nargs="+", choices=[job.key for job in JOBS], help="run only these benchmarks")
    p.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="markdown report (JSON next to it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    env = machine(torch.device(args.device))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for job in JOBS:
            if args.only and job.key not in args.only:
                continue
            if job.python == str(VENV_PYTHON) and not VENV_PYTHON.exists():
                skipped = f"{VENV_PYTHON.relative_to(ROOT)} is absent; set it up with `{SETUP_VENV}`"
                print(f"\n== {job.title}\nskipped: {skipped}", flush=True)
                results[job.key] = {"title": job.title, "command": "-", "seconds": 0.0, "returncode": None,
                                    "skipped": skipped}
                continue
            results[job.key] = run_job(job, args, Path(tmp))
    env["loadavg_end"] = machine(torch.device(args.device))["loadavg"]
    rows = ratio_rows(results)
    print(f"\n== Ratios measured in this run ({env['device']}, {env['cpu']}, {env['threads']} thread(s), "
          f"load average {env['loadavg'][0]:.1f} -> {env['loadavg_end'][0]:.1f})")
    print(ratio_table(rows) if rows else "no results")
    write_results(args, env, results, rows, command)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.json')}")
    return 0 if all(r.get("returncode") in (0, None) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
