"""Every built-in model trains in pyro.infer.SVI on its own programs with the ELBO pyromm builds for it, and SVI's
loss at a fixed seed is the loss the trainer computes (Pyro's ELBOs sum over the batch; the trainer averages)."""
import copy

import pyro
import pytest
import torch
from pyro.infer import SVI

from pyromm.config import RunConfig
from method_options import for_method
from pyromm.methods import METHODS
from pyromm.data import load_digits_multiview
from pyromm.run import build_elbo, build_model, build_objective

TINY = dict(dataset="digits", latent_dim=4, hidden=[16], batch_size=16)


def tiny_config(**settings) -> RunConfig:
    """TINY with ``settings``, and small flows where the method has them."""
    return RunConfig(**TINY, **settings, **for_method(settings["model"], flow_hidden=8, flow_blocks=1))
EXTRA = {"mmvae": {"num_importance_samples": 3}, "mmvae_plus": {"estimator": "dreg", "num_importance_samples": 2}}


@pytest.fixture(scope="module")
def digits():
    return load_digits_multiview("train", 3, seed=0).subset(slice(0, 32))


@pytest.mark.parametrize("name", METHODS.names())
def test_svi_trains_the_model_and_its_loss_is_the_trainers(digits, name):
    cfg = tiny_config(model=name, **EXTRA.get(name, {}))
    model = build_model(cfg, digits.event_shapes)
    batch = digits.batch(slice(0, cfg.batch_size))
    hyper = {"beta": 1.0}
    twin = copy.deepcopy(model)
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    trainer_loss = build_objective(cfg)(twin, batch, hyper).loss
    pyro.clear_param_store()
    pyro.set_rng_seed(5)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), loss=build_elbo(cfg))
    first = svi.step(batch, hyper)
    assert first / batch.batch_size == pytest.approx(trainer_loss.item(), rel=1e-5, abs=1e-5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [svi.step(batch, hyper) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "SVI moved no parameter"
