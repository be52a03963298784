"""Every guide in ``guides/`` runs as a program: its ```python blocks, in order, in one fresh namespace."""
from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyro
import pytest
import torch

GUIDES_DIR = Path(__file__).resolve().parents[1] / "guides"
GUIDES = sorted(p for p in GUIDES_DIR.glob("*.md") if p.name != "README.md")
# A fenced block opened by ```python at the start of a line and closed by ``` at the start of a line.
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return PYTHON_BLOCK.findall(text)


def _check_accuracies(accuracies: dict, modalities: list[str]) -> None:
    assert isinstance(accuracies, dict) and sorted(accuracies) == sorted(modalities), accuracies
    for name, value in accuracies.items():
        assert isinstance(value, float) and 0.0 <= value <= 1.0, (name, value)


def _check_custom_prior(ns: dict) -> None:
    assert ns["prior_check_passed"] is True
    assert ns["gradient_check_passed"] is True
    modalities = ns["train"].modalities
    assert len(modalities) == 3
    for key in ("independent", "mmvm"):
        _check_accuracies(ns["baseline_accuracy"][key], modalities)
    for key in ("mc", "jensen"):
        _check_accuracies(ns["loo_accuracy"][key], modalities)
    _check_accuracies(ns["tempered_accuracy"], modalities)
    tempered = ns["tempered"]
    assert any(p is tempered.temperature.log_tau for p in tempered.parameters()), "temperature is not trained"
    assert math.isfinite(ns["tau"]) and ns["tau"] > 0
    assert not Path(ns["RUN_ROOT"]).exists(), "the guide should remove its run directories"


def _check_custom_model(ns: dict) -> None:
    losses = ns["svi_losses"]
    assert sum(losses[-5:]) < sum(losses[:5]), "the SVI loss does not decrease"
    assert abs(ns["svi_pixel_scale"] - 0.5) > 0.01, "SVI left the pyro.param at its initial value"
    assert sorted(ns["runs"]) == ["DReG, K = 8, pyro.optim.Adam", "IWAE, K = 8, torch Adam"]
    assert ns["iwae"] > ns["elbo"]
    scores = ns["scores"]
    assert 0.2 < scores["latent_acc_mean"] <= 1.0
    assert scores["joint_coherence"] is not None and math.isfinite(scores["log_likelihood"])


def _check_inspect_subset_posteriors(ns: dict) -> None:
    idata, batch, dim = ns["idata"], ns["batch"], ns["LATENT_DIM"]
    assert set(idata.groups()) == {"posterior", "sample_stats"}
    assert idata.posterior["z"].shape == (4, 100, dim)
    assert {"diverging", "step_size", "tree_depth", "n_steps", "energy", "acceptance_rate"} <= set(
        idata.sample_stats.data_vars
    )
    assert not idata.sample_stats["diverging"].any()
    assert ns["nuts_rhat"] < 1.05 and ns["nuts_min_ess"] > 100
    assert abs(ns["mean_error"]).max() < 5, "NUTS means are not within 5 mcse of the closed form"
    assert ns["batched_rhat"] < 1.05
    assert ns["batched_idata"].posterior["z"].shape[2:] == (batch.batch_size, dim)
    figures = {"nuts_trace.png", "nuts_energy.png", "nuts_rank.png"}
    assert figures <= set(ns["saved_figures"]) and all(size > 0 for size in ns["saved_figures"].values())
    assert set(ns["khat"]) == {"PoE q(z | x_m0, x_m1)", "unimodal q(z | x_m0)", "SVI guide q(z | X)"}
    for values in ns["khat"].values():
        assert values.shape == (batch.batch_size,) and np.isfinite(values).all()
    assert ns["svi_idata"].posterior["z"].shape == (1, 1000, batch.batch_size, dim)
    assert ns["round_trip_ok"] is True
    assert not Path(ns["OUT"]).exists(), "the guide should remove its output directory"


def _check_tracking(ns: dict) -> None:
    history, steps = ns["history"], ns["steps"]
    assert [row["step"] for row in steps] == list(range(3, history[-1]["step"] + 1, 3))
    stopped = [row["epoch"] for row in history if "stop" in row]
    assert stopped in ([], [history[-1]["epoch"]]), "early stopping ends the run at the row that records it"
    assert len(history) == (4 if not stopped else stopped[0])
    assert [step for step, _ in ns["val_curve"]] == [row["step"] for row in history]
    assert ns["events"].Tags()["images"] and sorted(ns["events"].Tags()["images"]) == [
        f"generation/{m}" for m in ns["train"].modalities
    ]
    tracker, tracked = ns["tracker"], ns["tracked_history"]
    assert tracker.runs == ["tracked"] and tracker.ended == 1 and tracker.params["epochs"] == 3
    epochs = [(step, m["val/loss"]) for step, m in tracker.metrics if "val/loss" in m]
    assert epochs == [(row["step"], row["val/loss"]) for row in tracked]
    logged_steps = [step for step, m in tracker.metrics if "step/train/loss" in m]
    assert logged_steps == list(range(4, tracked[-1]["step"] + 1, 4))
    assert not Path(ns["OUT"]).exists(), "the guide should remove its output directory"


def _check_own_data(ns: dict) -> None:
    assert ns["dtype_warnings"] == [
        "modality 'image' is float64; converted to float32 (values kept)",
        "modality 'vector' is float64; converted to float32 (values kept)",
    ]
    run = ns["run"]
    assert run.config.dataset == "files" and run.config.epochs == 12 and run.modalities["vector"].weight == 2.0
    assert ns["generated"].shape == (100, 1, 28, 28)
    assert ns["generation_accuracy"] > 0.6, "images generated from vectors are near chance (0.25)"
    shapes = {name: tuple(x.shape) for name, x in ns["samples"].items()}
    assert shapes == {"image": (200, 1, 28, 28), "vector": (200, 8)}
    assert ns["joint_agreement"] > 0.45, "the modalities of unconditional samples agree near chance (0.25)"
    evaluation = ns["evaluation"]
    assert evaluation["latent_acc_mean"] > 0.6 and 0.0 <= evaluation["coherence_cross_mean"] <= 1.0
    for name, value in ns["by_hand"].model.state_dict().items():
        assert value.isfinite().all(), name


def _check_new_method(ns: dict) -> None:
    assert ns["typo"] == 2 and ns["status"] == 0
    losses = [row["train/loss"] for row in ns["history"]]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert ns["run"].config.prior_scale == 0.5 and ns["prior"].scale == 0.5
    assert sorted(ns["run"].modalities) == ["left", "right"]
    assert not Path(ns["OUT"]).exists(), "the guide should remove its output directory"


CHECKS: dict[str, Callable[[dict], None]] = {
    "new_method.md": _check_new_method,
    "own_data.md": _check_own_data,
    "custom_prior.md": _check_custom_prior,
    "custom_model.md": _check_custom_model,
    "inspect_subset_posteriors.md": _check_inspect_subset_posteriors,
    "tracking.md": _check_tracking,
}


def test_block_extraction_keeps_only_python_blocks_in_order():
    text = "intro ```python inline``` text\n```python\na = 1\n```\n```bash\nexit 1\n```\n```text\nx\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


def test_there_are_guides_and_the_index_lists_them():
    assert GUIDES, f"no guides in {GUIDES_DIR}"
    index = (GUIDES_DIR / "README.md").read_text(encoding="utf-8")
    for guide in GUIDES:
        assert f"({guide.name})" in index, f"guides/README.md does not link {guide.name}"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A tmp working and temp directory; torch threads, RNG and Pyro's param store restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    pyro.clear_param_store()
    try:
        yield tmp_path
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        pyro.clear_param_store()


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_guide_runs(guide: Path, isolated):
    blocks = python_blocks(guide.read_text(encoding="utf-8"))
    assert blocks, f"{guide.name} has no ```python blocks"
    namespace: dict = {"__name__": f"guide_{guide.stem}"}
    for i, code in enumerate(blocks, start=1):
        exec(compile(code, f"{guide.name} [python block {i}]", "exec", dont_inherit=True), namespace)
    check = CHECKS.get(guide.name)
    if check is not None:
        check(namespace)
