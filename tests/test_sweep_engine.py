"""Sweeps through an executor (local process pool, submitit), resumable runs, and ``pyromm collect``."""
import csv
import json

import pytest

from pyromm import sweep
from pyromm.cli import main
from pyromm.config import RunConfig
from pyromm.executors import local_pool, open_executor
from pyromm.sweep import beta_sweep, experiment_parser, run_grid

BASE = RunConfig(
    dataset="digits", num_views=2, model="independent", hidden=[32], latent_dim=4, epochs=1, batch_size=64,
    train_limit=256, test_limit=128, classifier_epochs=1, classifier_train_limit=256, eval_num_train=256,
)
BETAS = (0.5, 2.0)


@pytest.fixture(scope="module")
def pooled_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    with local_pool(2) as pool:
        rows = beta_sweep(BASE, ["independent"], BETAS, out, executor=pool, threads=1)
    return out, rows


def test_process_pool_sweep_writes_every_run_and_collect_builds_the_table(pooled_sweep, capsys):
    out, rows = pooled_sweep
    names = [f"independent_beta{b:g}_seed0" for b in BETAS]
    assert [r["run"] for r in rows] == names
    for name, beta in zip(names, BETAS):
        assert json.loads((out / name / "evaluation.json").read_text())["config"]["beta"] == beta
        assert json.loads((out / name / "config.json").read_text())["run"]["beta"] == beta
    for table in ("results.csv", "results.json", "tradeoff_latent.png", "tradeoff_coherence.png"):
        (out / table).unlink()

    assert main(["collect", str(out)]) == 0
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["run"] for r in table] == names
    assert [float(r["beta"]) for r in table] == list(BETAS)
    assert [float(r["latent_acc"]) for r in table] == [r["latent_acc"] for r in rows]
    assert (out / "tradeoff_latent.png").is_file() and (out / "tradeoff_coherence.png").is_file()
    assert "independent" in capsys.readouterr().out


def test_finished_runs_are_read_back_not_retrained(pooled_sweep, monkeypatch):
    out, rows = pooled_sweep

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep, "run", no_training)
    again = beta_sweep(BASE, ["independent"], BETAS, out)
    assert again == rows
    changed = {"changed": BASE.replace(beta=0.5, classifier_epochs=2)}  # same run, other config: not finished
    with pytest.raises(AssertionError, match="trained again"):
        run_grid(changed, out / "other")


def test_submitit_executor_runs_a_grid(tmp_path, pooled_sweep):
    submitit = pytest.importorskip("submitit", reason="optional package 'submitit' (pip install 'pyromm[cluster]')")
    _, rows = pooled_sweep
    executor = submitit.DebugExecutor(folder=str(tmp_path / "logs"))
    configs = {rows[0]["run"]: BASE.replace(beta=BETAS[0])}
    assert run_grid(configs, tmp_path, executor=executor) == rows[:1]  # the pool's run, retrained: same numbers
    assert (tmp_path / rows[0]["run"] / "evaluation.json").is_file()


def test_slurm_launcher_is_a_submitit_executor(tmp_path):
    pytest.importorskip("submitit", reason="optional package 'submitit' (pip install 'pyromm[cluster]')")
    slurm = {"timeout_min": 10, "cpus_per_task": 1, "slurm_partition": "gpu", "gpus_per_node": 1}
    with open_executor("slurm", 2, tmp_path, slurm) as executor:
        assert type(executor).__name__ == "AutoExecutor"  # its 'local' cluster here, 'slurm' where sbatch exists
        assert executor.folder == (tmp_path / "slurm").resolve()


def test_collect_without_runs_is_an_error(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 1
    assert "no run directory with an evaluation.json" in capsys.readouterr().err


def test_launch_options(tmp_path):
    args = experiment_parser("x", str(tmp_path), launch=True).parse_args(["--workers", "3", "--launcher", "local"])
    assert (args.workers, args.launcher) == (3, "local")
    assert not hasattr(experiment_parser("x", str(tmp_path)).parse_args([]), "workers")
    with open_executor("local", 1, tmp_path) as executor:
        assert executor is None
    with pytest.raises(ValueError, match="launcher"):
        with open_executor("pbs", 1, tmp_path):
            pass


def test_classifiers_are_prepared_once_per_cache_key_before_jobs_start(monkeypatch):
    keys = []
    monkeypatch.setattr(sweep, "coherence_classifiers", lambda cfg: keys.append(sweep.classifier_cache(cfg)[1]))
    configs = [BASE.replace(beta=b) for b in BETAS] + [BASE.replace(classifier_epochs=2)]
    sweep.prepare_classifiers(configs)
    assert keys == [sweep.classifier_cache(BASE)[1], sweep.classifier_cache(configs[-1])[1]]
    assert keys[0] != keys[1]
