"""Every experiment script builds valid configs for its --quick and --paper settings (dry run, no training)."""
import importlib.util
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["--quick", "--paper"])
@pytest.mark.parametrize(
    "script, extra, runs",
    [
        ("polymnist_beta_sweep", ["--all-methods"], None),
        ("polymnist_table3", [], ["mopoe_reference_seed0", "mvtcae_seed0", "mmvae_plus_seed0"]),
        ("incomplete_polymnist", ["--models", "mvae", "jmvae"],
         ["mvae_eta1_all", "mvae_eta0.8_all", "mvae_eta0.8_complete", "mvae_eta0.5_all", "mvae_eta0.5_complete",
          "jmvae_eta1_all", "jmvae_eta0.8_complete", "jmvae_eta0.5_complete"]),
        ("jnf_toy", [], ["jnf_seed0", "jnf_shared_seed0"]),
        ("mnist_fsdd", [], ["mmvm_seed0", "mopoe_reference_seed0", "mvtcae_seed0", "mmvae_plus_seed0", "jnf_seed0"]),
        ("mnist_fsdd", ["--sound-missing-max", "0.8", "--models", "mmvm", "jnf"], ["mmvm_seed0", "jnf_seed0"]),
    ],
)
def test_experiment_configs_are_valid(capsys, script, extra, runs, mode):
    load(script).main([mode, "--dry-run", *extra])
    printed = capsys.readouterr().out.split("\n")
    references, *lines = [line for line in printed if line]
    assert references.startswith("reference modes")
    if runs is None:
        betas = 12 if mode == "--paper" else 2
        assert len(lines) == 7 * betas and lines[-1].startswith("mmvae_plus")
    else:
        assert lines == runs


@pytest.mark.parametrize(
    "mode, betas",
    [("--quick", ["0.0001", "0.01"]), ("--paper", ["1e-05", "0.0001", "0.001", "0.0025", "0.005", "0.01"])],
)
def test_rats_experiment_configs_are_valid(capsys, mode, betas):
    load("rats").main([mode, "--dry-run", "--all-methods"])
    references, *lines = [line for line in capsys.readouterr().out.split("\n") if line]
    assert references.startswith("reference modes: none")
    models = ["independent", "avg", "poe", "mopoe", "mmvm"]
    assert lines == [f"{m}_beta{b}_seed0" for m in models for b in betas]


@pytest.mark.parametrize(
    "mode, runs",
    [
        ("--quick", ["mopoe_reference_beta0.5", "mmvae_beta1", "mmvae_plus_beta0.5", "jnf_beta0.5_flows2",
                     "jnf_shared_beta0.5_flows2"]),
        ("--paper", ["mopoe_reference_beta0.5", "mopoe_reference_beta1", "mopoe_reference_beta2.5", "mmvae_beta1",
                     "mmvae_plus_beta0.5", "mmvae_plus_beta1", "mmvae_plus_beta2.5",
                     *(f"{m}_{s}" for m in ("jnf", "jnf_shared")
                       for s in ("beta0.5_flows3", "beta0.5_flows2", "beta1_flows3", "beta2.5_flows3"))]),
    ],
)
def test_translated_polymnist_jnf_configs_are_valid(capsys, mode, runs):
    load("translated_polymnist_jnf").main([mode, "--dry-run"])
    references, *lines = [line for line in capsys.readouterr().out.split("\n") if line]
    assert references.startswith("reference modes")
    assert lines == [f"{run}_seed0" for run in runs]


@pytest.mark.parametrize(
    "script, extra, expected",
    [
        ("polymnist_beta_sweep", ["--all-methods"],
         "independent: mmvm-code, mmvm: mmvm-code, avg: mmvm-code, poe: mmvm-code, moe: mmvm-code, "
         "mopoe: mmvm-code, mmvae_plus: none"),
        ("polymnist_table3", [], "mopoe_reference: multivae, mvtcae: multivae, mmvae_plus: multivae"),
        ("incomplete_polymnist", ["--models", "mopoe_reference", "mmvm"], "mopoe_reference: multivae, mmvm: mmvm-code"),
        ("translated_polymnist_jnf", ["--models", "jnf", "mmvae"], "jnf: multivae, mmvae: multivae"),
        ("jnf_toy", [], "jnf: multivae, jnf_shared: multivae"),
    ],
)
def test_paper_settings_name_their_reference_modes(capsys, script, extra, expected):
    load(script).main(["--paper", "--dry-run", *extra])
    assert capsys.readouterr().out.split("\n")[0] == f"reference modes (docs/reference_differences.md): {expected}"
    load(script).main(["--quick", "--dry-run", *extra])
    assert capsys.readouterr().out.startswith("reference modes: none (pyromm's defaults")
