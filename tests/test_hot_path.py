"""No host-device sync inside a training step of any built-in objective, nor per step in the trainer.

A sync is any call that needs a tensor's value on the host (``item``, ``bool``, ``float``, ``int``, ``index``,
``tolist``, ``cpu``, ``numpy``) or whose output shape depends on tensor values (``nonzero``, boolean-mask
indexing). On CPU these are free, so they are counted by patching ``torch.Tensor``; on a GPU each one would
stall the step. Adam keeps its ``step`` counters on the CPU by design (reading them is not a device sync),
so calls on those tensors are not counted.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import pyro
import pytest
import torch

from pyromm.config import RunConfig
from method_options import for_method
from pyromm.data import load_digits_multiview
from pyromm.data.missing import drop_modalities
from pyromm.infer import DReG, ELBOObjective, IWAE, RateELBO
from pyromm.run import build_model, build_objective, build_stages
from pyromm.train import Trainer
from pyromm.train.trainer import as_objective

SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero")
TINY = dict(dataset="digits", latent_dim=4, hidden=[16], batch_size=16)


def tiny_config(**settings) -> RunConfig:
    """TINY with ``settings``, and small flows where the method has them."""
    return RunConfig(**TINY, **settings, **for_method(settings["model"], flow_hidden=8, flow_blocks=1))

# name -> RunConfig fields of every built-in objective
OBJECTIVES = {
    "independent": {"model": "independent"},
    "mmvm-jensen": {"model": "mmvm", "rate": "jensen"},
    "mmvm-mc": {"model": "mmvm", "rate": "mc"},
    "avg": {"model": "avg"},
    "poe": {"model": "poe"},
    "moe": {"model": "moe"},
    "mopoe": {"model": "mopoe"},
    "mopoe_reference": {"model": "mopoe_reference"},
    "mvae": {"model": "mvae"},
    "mvtcae": {"model": "mvtcae"},
    "jmvae": {"model": "jmvae"},
    "telbo": {"model": "telbo", "epochs": 2},
    "mmvae-iwae": {"model": "mmvae", "estimator": "iwae", "num_importance_samples": 2},
    "mmvae-dreg": {"model": "mmvae", "estimator": "dreg", "num_importance_samples": 2},
    "mmvae_plus": {"model": "mmvae_plus", "estimator": "elbo", "num_importance_samples": 1},
    "mmvae_plus-dreg": {"model": "mmvae_plus", "estimator": "dreg", "num_importance_samples": 2},
    "jnf": {"model": "jnf", "epochs": 2},
}
# Models that train on incomplete data: checked on masked batches too.
MASKED = ["independent", "mmvm-jensen", "avg", "poe", "moe", "mopoe", "mopoe_reference", "mvae", "mvtcae",
          "mmvae-dreg", "mmvae_plus"]


class SyncCounter:
    """Counts calls of the ``SYNC_METHODS`` and boolean-mask indexing on tensors, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.ignored: set[int] = set()

    @contextmanager
    def counting(self) -> Iterator["SyncCounter"]:
        originals = {name: getattr(torch.Tensor, name) for name in (*SYNC_METHODS, "__getitem__")}
        original_nonzero = torch.nonzero

        def counted(name, method):
            def wrapper(tensor, *args, **kwargs):
                if id(tensor) not in self.ignored:
                    self.calls[name] += 1
                return method(tensor, *args, **kwargs)

            return wrapper

        def getitem(tensor, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                self.calls["bool-mask index"] += 1
            return originals["__getitem__"](tensor, index)

        try:
            for name in SYNC_METHODS:
                setattr(torch.Tensor, name, counted(name, originals[name]))
            torch.Tensor.__getitem__ = getitem
            torch.nonzero = counted("nonzero", original_nonzero)
            yield self
        finally:
            for name, method in originals.items():
                setattr(torch.Tensor, name, method)
            torch.nonzero = original_nonzero


def test_the_counter_sees_each_kind_of_sync():
    x, mask = torch.arange(4.0), torch.tensor([True, False, True, False])
    counter = SyncCounter()
    with counter.counting():
        x[0].item(), bool(x[1]), float(x[2]), int(x[3]), x.tolist(), x.cpu(), x.numpy(), x.nonzero(), x[mask]
        torch.nonzero(x), range(x[1].long())
    assert counter.calls == {
        "item": 1, "__bool__": 1, "__float__": 1, "__int__": 1, "tolist": 1, "cpu": 1, "numpy": 1,
        "nonzero": 2, "bool-mask index": 1, "__index__": 1,
    }
    assert torch.Tensor.item.__name__ == "item" and torch.nonzero.__name__ == "nonzero"  # restored


@pytest.fixture(scope="module")
def digits():
    return load_digits_multiview("train", 3, seed=0).subset(slice(0, 64))


def stage_objectives(cfg: RunConfig, model) -> list[tuple[object, list[torch.nn.Parameter]]]:
    """(objective, trained parameters) of every training stage the run of ``cfg`` goes through."""
    stages = build_stages(cfg, model)
    if stages is None:
        return [(build_objective(cfg), list(model.parameters()))]
    return [(s.objective, list(s.trainable(model))) for s in stages]


def syncs_in_step(model, objective, params, batch) -> Counter[str]:
    """The syncs of ``objective; backward; Adam step``, counted on the second step (the first creates state)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=1e-3)
    counter = SyncCounter()
    objective = as_objective(objective)

    def step():
        optimizer.zero_grad(set_to_none=True)
        objective(model, batch, {"beta": 1.0}).loss.backward()
        optimizer.step()

    with pyro.validation_enabled(False):
        step()
        counter.ignored = {id(s["step"]) for s in optimizer.state.values()}
        with counter.counting():
            step()
    return counter.calls


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_no_sync_in_a_training_step(digits, name):
    cfg = tiny_config(**OBJECTIVES[name])
    model = build_model(cfg, digits.event_shapes)
    batch = digits.batch(slice(0, cfg.batch_size))
    for index, (objective, params) in enumerate(stage_objectives(cfg, model)):
        assert syncs_in_step(model, objective, params, batch) == {}, f"{name}, stage {index}"


@pytest.mark.parametrize(
    "elbo",
    [RateELBO("analytic"), RateELBO("mc"), IWAE(num_particles=3), DReG(num_particles=3)],
    ids=["rate-analytic", "rate-mc", "iwae", "dreg"],
)
def test_no_sync_in_a_step_of_the_generic_elbos(digits, elbo):
    """The generic ELBOs on a PoE model's programs: the general path of any program that follows the site
    conventions. (Pyro's own Trace_ELBO reads the loss on the host to warn about NaNs: RateELBO('mc') is the
    same objective without that.)"""
    cfg = tiny_config(model="poe")
    model = build_model(cfg, digits.event_shapes)
    batch = digits.batch(slice(0, cfg.batch_size))
    assert syncs_in_step(model, ELBOObjective(elbo), list(model.parameters()), batch) == {}


@pytest.mark.parametrize("name", MASKED)
def test_no_sync_in_a_training_step_on_incomplete_data(digits, name):
    cfg = tiny_config(**OBJECTIVES[name])
    data = drop_modalities(digits, 0.5, seed=0)
    batch = data.batch(slice(0, cfg.batch_size))
    assert not all(bool(m.all()) for m in batch.mask.values())
    model = build_model(cfg, digits.event_shapes)
    assert syncs_in_step(model, build_objective(cfg), list(model.parameters()), batch) == {}


def syncs_in_fit(cfg: RunConfig, data, **trainer_options) -> Counter[str]:
    """The syncs of one epoch of ``fit`` (SGD: its update reads no counter)."""
    model = build_model(cfg, data.event_shapes)
    trainer = Trainer(
        model, build_objective(cfg), optimizer="sgd", batch_size=cfg.batch_size, epochs=1, progress=False,
        **{"validate": False, **trainer_options},
    )
    counter = SyncCounter()
    with counter.counting():
        trainer.fit(data)
    return counter.calls


def test_trainer_syncs_per_window_not_per_step(digits):
    """An epoch of twice as many steps, inside one finiteness window, costs no more syncs."""
    Trainer.sync_every, default = 10**6, Trainer.sync_every
    try:
        cfg = tiny_config(**OBJECTIVES["mopoe"])
        short, long = syncs_in_fit(cfg, digits.subset(slice(0, 32))), syncs_in_fit(cfg, digits)
    finally:
        Trainer.sync_every = default
    assert long == short


def test_step_logging_syncs_once_per_logged_step_only(digits, tmp_path):
    """Logging every 2nd step: an epoch of 4 steps logs one more step than one of 2, at the cost of one sync."""
    Trainer.sync_every, default = 10**6, Trainer.sync_every
    try:
        cfg = tiny_config(**OBJECTIVES["mopoe"])
        options = dict(log_every_steps=2, run_dir=tmp_path / "run", resume=False)
        short, long = (syncs_in_fit(cfg, digits.subset(slice(0, n)), **options) for n in (32, 64))
    finally:
        Trainer.sync_every = default
    assert long - short == Counter({"tolist": 1})
    assert not short - long
