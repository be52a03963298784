"""Speed-ups agree with the eager float32 step: torch.compile of the networks, bf16 autocast, denormal flushing."""
from __future__ import annotations

import copy
import shutil

import pyro
import pytest
import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters

from pyromm.config import ConfigError, RunConfig
from pyromm.data import load_digits_multiview
from pyromm.run import build_model, build_objective
from pyromm.train import Trainer
from pyromm.train.acceleration import autocast, compile_networks, flushing_denormals

TINY = dict(dataset="digits", latent_dim=4, hidden=[16], batch_size=16)
MODELS = {
    "mmvm": {"model": "mmvm"},
    "mopoe": {"model": "mopoe"},
    "mmvae-dreg": {"model": "mmvae", "estimator": "dreg", "num_importance_samples": 2},
}
COMPILE_RTOL = 1e-4  # inductor may fuse and reorder float32 arithmetic
BF16_RTOL = 2e-2  # bf16 keeps 8 significant bits (relative rounding 2^-8 ≈ 4e-3 per operation)
NO_CXX = shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None


@pytest.fixture(scope="module")
def digits():
    return load_digits_multiview("train", 3, seed=0).subset(slice(0, 32))


def loss_and_grads(objective, model, batch, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = objective(model, batch, {"beta": 1.0}).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def assert_step_agrees(name: str, digits, backend: str) -> None:
    cfg = RunConfig(**{**TINY, **MODELS[name]})
    model = build_model(cfg, digits.event_shapes)
    eager = copy.deepcopy(model)
    objective = build_objective(cfg)
    batch = digits.batch(slice(0, cfg.batch_size))
    torch._dynamo.reset()
    counters.clear()
    assert compile_networks(model, backend)
    with pyro.validation_enabled(False), inductor_config.patch(fallback_random=True):
        loss, grads = loss_and_grads(objective, model, batch)
        expected, expected_grads = loss_and_grads(objective, eager, batch)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 2
    torch.testing.assert_close(loss, expected, rtol=COMPILE_RTOL, atol=0)
    assert len(grads) == len(expected_grads)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=COMPILE_RTOL, atol=COMPILE_RTOL * want.abs().max().item())


@pytest.mark.parametrize("name", ["mmvm", "mmvae-dreg"])  # mopoe: compiled by the trainer test below
def test_compiled_networks_trace_without_graph_breaks_and_agree(digits, name):
    """Dynamo's graphs of the networks and AOT autograd (backend 'aot_eager': no code generation, fast) give
    eager's numbers."""
    assert_step_agrees(name, digits, "aot_eager")


@pytest.mark.slow
@pytest.mark.skipif(NO_CXX, reason="torch.compile's CPU code generation (inductor) needs a C++ compiler; none found")
def test_inductor_compiled_networks_agree_with_eager(digits):
    """The default backend, C++ kernels included (a cold compile takes a minute or more on a CPU)."""
    assert_step_agrees("mopoe", digits, "inductor")


@pytest.mark.parametrize("name", list(MODELS))
def test_bf16_autocast_loss_agrees_with_float32(digits, name):
    cfg = RunConfig(**{**TINY, **MODELS[name]})
    model = build_model(cfg, digits.event_shapes)
    objective = build_objective(cfg)
    batch = digits.batch(slice(0, cfg.batch_size))
    with pyro.validation_enabled(False):
        expected, _ = loss_and_grads(objective, model, batch)
        with autocast(torch.device("cpu"), "bf16"):
            torch.manual_seed(0)
            out = objective(model, batch, {"beta": 1.0})
        out.loss.backward()
    assert out.loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch.testing.assert_close(out.loss.detach(), expected, rtol=BF16_RTOL, atol=0)


def test_trainer_trains_compiled_and_under_autocast(digits):
    cfg = RunConfig(**{**TINY, **MODELS["mopoe"]})
    rows = {}
    for options in ({}, {"compile": "aot_eager"}, {"autocast": "bf16"}):
        model = build_model(cfg, digits.event_shapes)
        trainer = Trainer(model, build_objective(cfg), batch_size=16, epochs=2, progress=False, **options)
        rows[tuple(options.items())] = trainer.fit(digits)
        assert trainer.config()["compile"] == options.get("compile") and trainer.config()["autocast"] == options.get("autocast")
    eager, compiled, bf16 = rows.values()
    assert [r["train/loss"] for r in compiled] == pytest.approx([r["train/loss"] for r in eager], rel=COMPILE_RTOL)
    assert [r["train/loss"] for r in bf16] == pytest.approx([r["train/loss"] for r in eager], rel=BF16_RTOL)


def test_config_options():
    assert RunConfig(compile=True, autocast="bf16").autocast == "bf16"
    with pytest.raises(ConfigError, match="autocast must be one of"):
        RunConfig(autocast="fp16")
    with pytest.raises(ConfigError, match="compile has type str"):
        RunConfig(compile="yes")
    with pytest.raises(ValueError, match="autocast must be None or one of"):
        Trainer(torch.nn.Linear(1, 1), lambda *a: None, autocast="fp8")


DENORMAL = 1e-39  # below float32's smallest normal, 2^-126 ≈ 1.18e-38


def survives(value: float) -> bool:
    return torch.tensor([value]).mul(1.0).item() != 0


def test_denormals_flush_inside_the_context_and_the_setting_is_restored():
    assert survives(DENORMAL)
    with flushing_denormals(torch.device("cpu")):
        assert not survives(DENORMAL) and survives(2e-38)
        with flushing_denormals(torch.device("cpu")):
            pass
        assert not survives(DENORMAL)  # the inner context restored "on", not "off"
    assert survives(DENORMAL)
    with flushing_denormals(torch.device("cpu"), enabled=False), flushing_denormals(torch.device("meta")):
        assert survives(DENORMAL)


def test_trainer_flushes_denormals_while_it_trains_only(digits):
    seen = []

    def objective(model, batch, hyper):
        seen.append(survives(DENORMAL))
        return build_objective(RunConfig(**TINY))(model, batch, hyper)

    for flush in (True, False):
        model = build_model(RunConfig(**TINY), digits.event_shapes)
        Trainer(model, objective, batch_size=16, epochs=1, progress=False, flush_denormals=flush).fit(digits)
    assert seen == [False, False, True, True]
    assert survives(DENORMAL)
