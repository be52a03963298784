"""Runs vectorized with torch.func (stacked parameters, one Adam) take the steps of separate runs."""
import pytest
import torch

from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset, load_digits_multiview
from pyromm.run import build_model, build_objective
from pyromm.train.vectorized import VectorizedRuns, stacked_batches

SHAPES = {"m0": (1, 8, 8), "m1": (1, 8, 8)}
BETAS = (0.5, 2.0)
SEEDS = (0, 1)
STEPS = 3
# float64: vmap's batched matmuls and the separate runs' matmuls round differently, and Adam divides by sqrt(v),
# which in float32 can turn that rounding into visible differences on near-zero gradients.
ATOL = 1e-10


def digits() -> MultimodalDataset:
    full = load_digits_multiview("train", 2, seed=0)
    masks = {"m1": torch.arange(len(full)) % 3 != 0}  # every third sample lacks m1
    return MultimodalDataset({k: v.double() for k, v in full.data.items()}, full.labels, masks).subset(slice(0, 96))


def models(cfg: RunConfig) -> list:
    return [build_model(cfg.replace(seed=seed), SHAPES).double() for seed in SEEDS]


@pytest.mark.parametrize("model", ["independent", "mmvm"])
def test_two_vectorized_runs_equal_two_separate_runs(model):
    cfg = RunConfig(dataset="digits", num_views=2, model=model, hidden=[16], latent_dim=4,
                    **({"alpha": 0.5} if model == "mmvm" else {}))
    objective = build_objective(cfg)
    batches = stacked_batches(digits(), [torch.Generator().manual_seed(s) for s in SEEDS], 32)
    assert [tuple(b.data["m0"].shape) for b in batches] == [(2, 32, 1, 8, 8)] * 3
    shared = {"alpha": 0.5}

    together = VectorizedRuns(models(cfg), objective, lr=1e-2)
    losses = []
    for step, batch in enumerate(batches[:STEPS]):
        torch.manual_seed(step)
        losses.append(together.step(batch, {"beta": torch.tensor(BETAS, dtype=torch.float64), **shared})[0])

    for k, separate in enumerate(models(cfg)):
        adam = torch.optim.Adam(separate.parameters(), lr=1e-2)
        for step, batch in enumerate(batches[:STEPS]):
            own = type(batch)({m: x[k] for m, x in batch.data.items()}, {m: x[k] for m, x in batch.mask.items()})
            torch.manual_seed(step)
            out = objective(separate, own, {"beta": BETAS[k], **shared})
            adam.zero_grad()
            out.loss.backward()
            adam.step()
            torch.testing.assert_close(losses[step][k], out.loss.detach(), rtol=0, atol=ATOL)
        state = together.state_dict(k)
        for name, value in separate.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=ATOL, msg=name)
    assert not torch.equal(together.state_dict(0)["encoders.m0.body.0.weight"],
                           together.state_dict(1)["encoders.m0.body.0.weight"])


def test_per_run_hypers_need_one_value_per_run():
    cfg = RunConfig(dataset="digits", num_views=2, model="independent", hidden=[16], latent_dim=4)
    runs = VectorizedRuns(models(cfg), build_objective(cfg))
    batch = stacked_batches(digits(), [torch.Generator().manual_seed(s) for s in SEEDS], 32)[0]
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        runs.step(batch, {"beta": torch.ones(3, dtype=torch.float64)})
