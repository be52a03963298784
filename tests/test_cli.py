"""The ``pyromm`` command line: quickstart end to end, train config parsing, data prepare/list, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyromm.cli import build_config, format_summary, format_table, main, parse_overrides
from pyromm.config import ConfigError
from pyromm.data.mnist import MNIST_MD5
from pyromm.data.polymnist import polymnist_cache_dir, polymnist_metadata
from pyromm.provenance import evaluation_problem

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_quickstart_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "pyromm", "quickstart", "--out", str(out), "--epochs", "2", "--betas", "1", "--no-progress"],
        cwd=tmp_path, env=_env(PYROMM_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("results.csv", "results.json", "tradeoff_latent.png", "tradeoff_coherence.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["beta"]) for r in rows] == [("independent", 1.0), ("mmvm", 1.0)]
    for model in ("independent", "mmvm"):
        evaluation = json.loads((out / f"{model}_beta1_seed0" / "evaluation.json").read_text())
        assert evaluation["config"]["epochs"] == 2 and evaluation["config"]["dataset"] == "digits"
        assert 0.0 <= evaluation["latent_acc_mean"] <= 1.0
    # the printed table and the output paths
    assert "latent acc" in proc.stdout and "coherence" in proc.stdout and "rec NLL" in proc.stdout
    table = [line.split() for line in proc.stdout.splitlines() if line.startswith(("independent ", "mmvm "))]
    assert [(t[0], float(t[1])) for t in table] == [("independent", 1.0), ("mmvm", 1.0)]
    assert str(out / "results.csv") in proc.stdout and str(out / "tradeoff_coherence.png") in proc.stdout
    # derived files went to $PYROMM_CACHE
    assert (tmp_path / "cache" / "classifiers").is_dir()


def test_parse_overrides_json_with_string_fallback() -> None:
    values = parse_overrides(["beta=0.5", "hidden=[64,64]", "model=independent", "train_limit=null", "data_root=/a=b"])
    assert values == {"beta": 0.5, "hidden": [64, 64], "model": "independent", "train_limit": None, "data_root": "/a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["beta"])


def test_build_config_from_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "independent", "beta": 2.0, "epochs": 3}))
    cfg = build_config(str(path), ["beta=0.5", "hidden=[64,64]"])
    assert (cfg.model, cfg.beta, cfg.epochs, cfg.hidden) == ("independent", 0.5, 3, [64, 64])


@pytest.mark.parametrize(
    "args, field",
    [
        (["--set", "beta=-1"], "beta"),
        (["--set", "hidden=abc"], "hidden"),
        (["--set", "no_such_field=1"], "no_such_field"),
        (["--set", "model=vae"], "model"),
    ],
)
def test_train_config_error_exits_2_naming_the_field(args, field, tmp_path: Path, capsys) -> None:
    status = main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert field in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_config_error_from_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyromm", "train", "--set", "beta=-0.5"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "beta" in proc.stderr and "Traceback" not in proc.stderr


def test_train_missing_or_invalid_config_file(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{beta: 1")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_then_evaluate_and_refuse_changed_resume(tmp_path: Path, capsys, monkeypatch, restore_torch_threads) -> None:
    monkeypatch.setenv("PYROMM_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    common = ["--set", "epochs=1", "--set", "hidden=[32]", "--set", "classifier_epochs=1", "--out", str(run_dir)]
    assert main(["train", *common, "--set", "beta=0.5", "--no-eval", "--no-progress", "--threads", "1"]) == 0
    assert (run_dir / "config.json").is_file() and not (run_dir / "evaluation.json").exists()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "latent accuracy" in out and "coherence" in out and "reconstruction NLL" in out
    assert (run_dir / "evaluation.json").is_file()
    # evaluation settings may change on evaluation; the evaluation records them and is not stale for it
    assert main(["evaluate", str(run_dir), "--set", "eval_num_train=64", "--set", "store_latent_sampler=false"]) == 0
    results = json.loads((run_dir / "evaluation.json").read_text())
    assert results["config"]["eval_num_train"] == 64 and results["config"]["store_latent_sampler"] is False
    assert evaluation_problem(run_dir, results) is None
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--set", "beta=2"]) == 2
    assert "--set beta: evaluating a run of pyromm train changes only its evaluation settings" in capsys.readouterr().err
    # resuming with another beta would silently mix configs: refused with exit 2, naming the field
    assert main(["train", *common, "--set", "beta=2", "--no-eval", "--no-progress"]) == 2
    assert "beta" in capsys.readouterr().err


def test_bad_input_gives_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.strip().splitlines()) == 1
    assert main([]) == 2
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert main(["data", "prepare", "svhn"]) == 2
    capsys.readouterr()
    assert main(["data", "prepare", "polymnist", "--views", "7", "--root", str(tmp_path)]) == 2
    assert "num_views" in capsys.readouterr().err


def test_data_prepare_mnist_verifies_md5s(shared_data_root: Path, tmp_path: Path, capsys) -> None:
    if not all((shared_data_root / "mnist" / name).is_file() for name in MNIST_MD5):
        pytest.skip("MNIST files missing from the shared data root")
    assert main(["data", "prepare", "mnist", "--root", str(shared_data_root), "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, md5 in MNIST_MD5.items():
        line = next(line for line in out.splitlines() if name in line)
        assert "verified" in line and md5 in line and "ok" in line
    assert not any(tmp_path.iterdir())  # nothing generated for mnist


def test_data_prepare_corrupt_mnist_fails_naming_file_and_md5(tmp_path: Path) -> None:
    name = "train-labels-idx1-ubyte.gz"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / name).write_bytes(b"not the MNIST labels" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "pyromm", "data", "prepare", "mnist", "--root", str(tmp_path), "--cache", str(tmp_path / "c")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert name in proc.stderr and "md5" in proc.stderr and MNIST_MD5[name] in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_data_prepare_corrupt_copy_of_real_file(shared_data_root: Path, tmp_path: Path, capsys) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    source = shared_data_root / "mnist" / name
    if not source.is_file():
        pytest.skip(f"shared data file missing: {source}")
    (tmp_path / "mnist").mkdir()
    target = tmp_path / "mnist" / name
    shutil.copyfile(source, target)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert main(["data", "prepare", "mnist", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(target) in err and MNIST_MD5[name] in err


def _fake_polymnist_cache(cache: Path) -> Path:
    """A tiny cached PolyMNIST variant (the real metadata, 4 train / 2 test tuples) in ``cache``."""

    directory = polymnist_cache_dir(cache, 2, False, 0)
    directory.mkdir(parents=True)
    (directory / "metadata.json").write_text(json.dumps(polymnist_metadata(2, False, 0)))
    for split, n in (("train", 4), ("test", 2)):
        for m in range(2):
            np.save(directory / f"{split}_m{m}.npy", np.zeros((n, 3, 28, 28), dtype=np.uint8))
        np.save(directory / f"{split}_labels.npy", np.zeros(n, dtype=np.int64))
    return directory


def test_data_list(shared_data_root: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    directory = _fake_polymnist_cache(cache)
    assert main(["data", "list", "--root", str(shared_data_root), "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert str(shared_data_root) in out and str(cache) in out
    for name in MNIST_MD5:
        line = next(line for line in out.splitlines() if name in line)
        present = (shared_data_root / "mnist" / name).is_file()
        assert ("md5 ok" in line) if present else ("missing" in line)
    assert "original/1.jpg" in out and "extended/09road-3186188_1280.jpg" in out
    line = next(line for line in out.splitlines() if directory.name in line)
    assert "train 4" in line and "test 2" in line and "seed 0" in line
    assert "Sutter" in out and "Daunhawer" in out and "LeCun" in out and "scikit-learn" in out


def test_data_list_reports_corrupt_and_missing(tmp_path: Path, capsys) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    assert main(["data", "list", "--root", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" in out and out.count("missing") >= 3 + 5
    assert "none" in out  # no cached PolyMNIST


def test_data_prepare_digits(capsys) -> None:
    assert main(["data", "prepare", "digits"]) == 0
    assert "train" in capsys.readouterr().out


def test_tables_show_the_classifier_accuracy_and_flag_weak_classifiers():

    rows = [
        {"model": "mmvm", "beta": 1.0, "latent_acc": 0.8, "coherence": 0.5, "rec_error": 100.0,
         "classifier_acc/m0": 0.95, "classifier_acc/m1": 0.85},
        {"model": "independent", "beta": 1.0, "latent_acc": 0.7, "coherence": 0.1, "rec_error": 90.0,
         "classifier_acc/m0": 0.95, "classifier_acc/m1": 0.93},
    ]
    lines = format_table(rows).splitlines()
    assert "(clf acc)" in lines[0]
    assert lines[1].split()[-2] == "0.850!" and lines[2].split()[-2] == "0.930"
    assert lines[3].startswith("! coherence judged by classifiers below 0.90 test accuracy (m1 0.850)")
    assert len(format_table(rows[1:]).splitlines()) == 2  # no weak classifier: no note
    summary = format_summary({"latent_acc_mean": 0.8, "coherence_cross_mean": 0.5, "rec_nll": 1.0, "rec_mse": 0.1,
                              "classifier_accuracy": {"m0": 0.95, "m1": 0.7}})
    assert summary.splitlines()[-1].startswith("! coherence judged by classifiers below 0.90 test accuracy (m1 0.700)")
