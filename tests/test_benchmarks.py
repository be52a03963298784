"""The benchmark scripts still run: step_time.py, modality_scaling.py and data_pipeline.py at minimal sizes,
checking their JSON.

They run in this process (a fresh interpreter would spend most of the test importing torch and pyromm); the fixture
restores the torch thread count, Pyro validation, denormal flushing and the random state the scripts change.
"""
import importlib
import json
from pathlib import Path

import pyro
import pytest
import torch
from pyro.distributions.util import is_validation_enabled

from pyromm.train.acceleration import denormals_flushed

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def run(monkeypatch, tmp_path):
    """``run(script, options)``: the JSON that ``benchmarks/<script>.py options --json ...`` writes."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import common.py from there
    threads, validation, flushed = torch.get_num_threads(), is_validation_enabled(), denormals_flushed()

    def run_script(script: str, options: list[str]) -> dict:
        out = tmp_path / f"{script}.json"
        with torch.random.fork_rng():
            importlib.import_module(script).main([*options, "--threads", "1", "--device", "cpu", "--json", str(out)])
        return json.loads(out.read_text())

    yield run_script
    torch.set_num_threads(threads)
    pyro.enable_validation(validation)
    torch.set_flush_denormal(flushed)


def test_modality_scaling_json(run):
    result = run("modality_scaling", ["--ms", "2", "3", "--features", "8", "--hidden", "8", "--latent-dim", "2",
                                      "--batch-size", "8", "--k", "2", "--steps", "1", "--rounds", "1", "--warmup", "0"])
    assert {"date", "cpu", "cores", "threads", "torch", "pyro", "nflows", "loadavg"} <= set(result["env"])
    assert [(r["model"], r["M"]) for r in result["rows"]] == [(m, k) for m in ("mmvm", "mopoe", "mmvae") for k in (2, 3)]
    for r in result["rows"]:
        assert r["ms"] > 0 and r["ms_per_M"] == r["ms"] / r["M"]
        assert r["encoder_passes"] == r["M"]
        # MMVAE decodes each of its K·M draws with every decoder: K·M² passes; the others M.
        assert r["decoder_passes"] == (2 * r["M"] ** 2 if r["model"] == "mmvae" else r["M"])
    assert set(result["fits"]) == {"mmvm", "mopoe", "mmvae"}
    assert all({"exponent", "exponent_per_pass"} <= set(fit) for fit in result["fits"].values())


def test_data_pipeline_json(run):
    result = run("data_pipeline", ["--num-samples", "64", "--views", "2", "--batch-size", "16", "--latent-dim", "4",
                                   "--batches", "5", "--steps", "1", "--warmup", "0"])
    assert [(r["dataset"], r["placement"]) for r in result["rows"]] == [("polymnist", "resident"), ("digits", "resident")]
    assert result["env"]["flush_denormal"]
    for r in result["rows"]:
        assert r["delivered_per_s"] > 0 and r["consumed_per_s"] > 0
        assert r["ratio"] == r["delivered_per_s"] / r["consumed_per_s"]
    memory = result["memory"]
    assert memory["rss_after_imports_mib"] <= memory["rss_after_data_mib"] <= memory["rss_after_steps_mib"]
    assert memory["dataset_mib"] == 64 * 2 * 3 * 28 * 28 / 2**20


def test_step_time_checks_both_sides_agree_and_marks_the_general_path(run):
    result = run("step_time", ["--network", "mlp", "--models", "mmvm-mc", "mmvm-pyro", "--batch-size", "8",
                               "--latent-dim", "4", "--steps", "1", "--rounds", "1", "--warmup", "0"])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"mmvm-mc", "mmvm-pyro"} and result["env"]["flush_denormal"] and denormals_flushed()
    assert not rows["mmvm-mc"]["general_path"] and rows["mmvm-pyro"]["general_path"]
    for r in rows.values():  # the script raises unless the losses agree to 1e-4; the same draws give the same loss
        assert r["loss_err"] < 1e-6 and r["grad_err"] < 1e-4
        assert r["ratio"] == pytest.approx(r["pyromm_ms"] / r["torch_ms"])


def test_step_time_of_the_joint_encoder_family_agrees_with_the_hand_written_steps(run):
    models = ["jmvae", "telbo_stage2", "jnf_stage2"]
    result = run("step_time", ["--network", "mlp", "--models", *models, "--batch-size", "8", "--latent-dim", "4",
                               "--steps", "1", "--rounds", "1", "--warmup", "0"])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == set(models)
    for r in rows.values():
        assert r["loss_err"] < 1e-6 and r["grad_err"] < 1e-4 and not r["general_path"]


def test_objective_snapshot_tells_the_same_objective_from_another(run, tmp_path, capsys):
    """Two snapshots of one config and weights agree; another β changes the loss and fails the comparison; the
    zero-noise patch is undone afterwards."""
    snapshot = importlib.import_module("objective_snapshot")
    config = {"model": "mvtcae", "dataset": "digits", "num_views": 3, "latent_dim": 4, "hidden": [16], "beta": 2.5}
    paths = {}
    for name, beta in (("a", 2.5), ("b", 2.5), ("other", 1.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**config, "beta": beta}))
        paths[name] = tmp_path / f"{name}.pt"
        assert snapshot.main(["save", str(tmp_path / f"{name}.json"), str(paths[name]), "--weights",
                              str(tmp_path / "weights.pt"), "--batch", "32"]) == 0
    assert snapshot.main(["compare", str(paths["a"]), str(paths["b"])]) == 0
    assert "relative difference 0.0e+00" in capsys.readouterr().out
    assert snapshot.main(["compare", str(paths["a"]), str(paths["other"])]) == 1
    draws = torch.distributions.Normal(torch.zeros(3), 1.0).rsample()
    assert not torch.equal(draws, torch.zeros(3)), "rsample is restored after the snapshot"


def test_objective_snapshot_trajectories_of_one_training_agree_and_of_another_do_not(run, tmp_path, capsys):
    snapshot = importlib.import_module("objective_snapshot")
    config = {"model": "mopoe", "dataset": "digits", "num_views": 3, "latent_dim": 4, "hidden": [16], "batch_size": 16}
    for name, beta in (("a", 1.0), ("b", 1.0), ("other", 4.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**config, "beta": beta}))
        assert snapshot.main(["trajectory", str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.pt"),
                              "--steps", "4"]) == 0
    norms = torch.load(tmp_path / "a.pt", weights_only=True)["norms"]
    assert norms.shape == (4,) and bool((norms > 0).all())
    capsys.readouterr()
    assert snapshot.main(["compare", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    assert "beyond 1e-6: None" in capsys.readouterr().out
    assert snapshot.main(["compare", str(tmp_path / "a.pt"), str(tmp_path / "other.pt")]) == 1
    assert torch.optim.Adam.step.__name__ == "step" and "recorded" not in torch.optim.Adam.step.__qualname__
