"""benchmarks/gpu_check.py: its time-boxing, and the whole check in --smoke mode on a CPU through gpu_check.sh."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
PARTS = ["data", "step_ratios", "mmvm_epoch", "grid", "final_runs"]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # gpu_check imports common.py, step_time.py, ... from there
    import gpu_check

    return gpu_check


def numbers(value, path="$"):
    """Every int/float in a JSON value with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def slow_part(settings, deadline, log):
    log.results["before"] = 1.0
    log.save()
    time.sleep(60)
    log.results["after"] = 2.0
    log.save()


def failing_part(settings, deadline, log):
    raise RuntimeError("broken on purpose")


def test_a_part_past_its_limit_is_killed_and_keeps_what_it_saved(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setitem(gpu_check.parts.PARTS, "slow", slow_part)
    monkeypatch.setitem(gpu_check.parts.PARTS, "failing", failing_part)
    start = time.monotonic()
    slow = gpu_check.run_part("slow", {"work_dir": str(tmp_path)}, budget=0.5, hard_limit=3.0)
    assert time.monotonic() - start < 15
    assert slow["status"].startswith("killed at its time limit") and slow["results"] == {"before": 1.0}
    failed = gpu_check.run_part("failing", {"work_dir": str(tmp_path)}, budget=5.0, hard_limit=30.0)
    assert failed["status"] == "failed (exit 1)"
    assert failed["failures"][0]["what"] == "part failing" and "broken on purpose" in failed["failures"][0]["error"]


def test_grid_configs_are_distinct_beta_seed_pairs(gpu_check):
    settings = {"network": "conv", "latent_dim": 4, "batch_size": 8, "device": "cpu"}
    for k in (2, 8, 16):
        configs = gpu_check.parts.grid_configs(settings, k)
        pairs = {(c.beta, c.seed) for c in configs}
        assert len(configs) == len(pairs) == k
        assert sorted({c.beta for c in configs}) == [2.0 ** (j - k // 4) for j in range(k // 2)]
        assert all(c.model == "mmvm" and c.network == "conv" for c in configs)


def test_final_runs_train_with_the_fastest_eager_variant(gpu_check):
    variants = [{"compile": None, "autocast": None, "epoch_s": 3.0}, {"compile": None, "autocast": "bf16", "epoch_s": 2.0},
                {"compile": "inductor", "autocast": None, "epoch_s": 1.0}]
    assert gpu_check.fastest_eager_autocast({"results": {"variants": variants}}) == "bf16"
    assert gpu_check.fastest_eager_autocast({}) is None


@pytest.mark.slow
def test_smoke_run_writes_the_report(shared_data_root, tmp_path):
    """prepare --smoke, then gpu_check.sh --smoke --device cpu: every part runs and the report holds finite numbers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
           "OUT": str(tmp_path / "out"), "GPU_CHECK_PREPARED": str(tmp_path / "prepared")}
    subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "prepare", "--smoke", "--no-wheels", "--out",
                    str(tmp_path / "prepared"), "--data-root", str(shared_data_root)], env=env, check=True, cwd=ROOT)
    manifest = json.loads((tmp_path / "prepared" / "classifiers" / "manifest.json").read_text())
    assert manifest["cache_key"] == "polymnist-3views-seed0-n512-e1"
    subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--smoke", "--device", "cpu"], env=env, check=True,
                   cwd=tmp_path, timeout=600)

    out = tmp_path / "out"
    report = json.loads((out / "gpu_check.json").read_text())
    assert {"date", "command", "device", "device_name", "torch", "smoke", "budget_s", "wall_s", "env", "parts",
            "targets"} <= set(report)
    assert report["smoke"] and report["device"] == "cpu"
    assert report["command"] == "bash benchmarks/gpu_check.sh --smoke --device cpu"
    assert list(report["parts"]) == PARTS
    for name, part in report["parts"].items():
        assert part["status"] == "ok" and not part["failures"] and not part["skipped"], (name, part)
    bad = [(path, value) for path, value in numbers(report) if not math.isfinite(value)]
    assert not bad

    results = {name: part["results"] for name, part in report["parts"].items()}
    assert results["data"]["train"]["samples"] == 512 and results["data"]["test"]["samples"] == 128
    groups = results["step_ratios"]["groups"]
    assert [(g["network"], g["variant"]) for g in groups] == [
        ("conv", "float32 eager"), ("resnet", "float32 eager"), ("conv", "bf16 eager"), ("conv", "compiled (aot_eager)")]
    assert groups[2]["env"]["autocast"] == "bf16" and groups[3]["env"]["compile"] == "aot_eager"
    assert any(r["general_path"] for r in groups[0]["rows"])
    variants = results["mmvm_epoch"]["variants"]
    assert [v["variant"] for v in variants] == ["float32, eager", "bf16, eager", "bf16, compiled", "float32, compiled"]
    per_epoch = results["mmvm_epoch"]["steps_per_epoch"]
    assert per_epoch == 60000 // 8
    for v in variants:
        assert v["epoch_s"] == pytest.approx(v["step_ms"] / 1e3 * per_epoch)
        assert v["projected_400_epochs_s"] == pytest.approx(400 * v["epoch_s"])
        assert v["utilisation"] == {"skipped": "device is cpu, not a CUDA GPU"} and v["peak_memory_mib"] is None
    rows = results["grid"]["rows"]
    assert [(r["mode"], r["runs"]) for r in rows] == [("one at a time (Trainer)", 1), ("vectorized, K = 2", 2),
                                                      ("vectorized, K = 4", 4), ("2 processes sharing the device", 2)]
    for r in rows:
        assert r["ratio"] == pytest.approx(r["runs_per_hour"] / rows[0]["runs_per_hour"])
    runs = {r["model"]: r for r in results["final_runs"]["runs"]}
    assert set(runs) == {"mmvm", "independent"} and results["final_runs"]["classifiers"]["source"].startswith("carried")
    for r in runs.values():
        assert set(r["latent_accuracy"]) == {"m0", "m1", "m2"} and 0 <= r["coherence_cross"] <= 1 and r["steps"] >= 1
        assert r["train_budget_s"] == results["final_runs"]["train_budget_s"] <= 1.0  # --smoke caps it at 1 s
    targets = report["targets"]
    assert {t["part"] for t in targets} == {"step_ratios", "mmvm_epoch", "grid", "final_runs"}
    for t in targets:
        bound = float(t["target"].split()[1].rstrip("x"))
        assert t["met"] == (t["value"] <= bound if t["target"].startswith("<=") else t["value"] >= bound)

    markdown = (out / "gpu_check.md").read_text()
    for label in ("date", "device", "torch", "command"):
        assert f"| {label} |" in markdown
    assert markdown.count(" | yes |") + markdown.count(" | NO |") >= len(targets)
    assert (out / "gpu_check.log").read_text().count("== part ") == 2 * len(PARTS)
