"""Data-parallel training on 2 CPU processes (gloo) equals single-process training on the same global batches."""
import csv
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyromm.config import RunConfig
from pyromm.data import MultimodalDataset, load_digits_multiview
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.infer.objective import ObjectiveOutput
from pyromm.run import build_model
from pyromm.train import Trainer
from pyromm.train.distributed import DataParallel

WORLD = 2
CFG = RunConfig(dataset="digits", num_views=2, model="independent", hidden=[16], latent_dim=4)
# float64 keeps the two summation orders (one batch of 32 vs two shards of 16, then the mean) within ~1e-15,
# so Adam's division by sqrt(v) cannot amplify rounding into visible parameter differences.
ATOL = 1e-10


def mean_elbo(model, batch, hyper):
    """loss = mean_b Σ_m [−log p(x_m | z = E q_m) + β KL(q_m ‖ N(0, I))]: the ELBO without sampling noise."""
    terms, loss = {}, 0.0
    for name, q in model.encode(batch).items():
        rec = -model.decode(name, q.mean).log_prob(batch.data[name]).mean()
        kl = (0.5 * (q.mean**2 + q.variance - q.variance.log() - 1.0)).sum(-1).mean()
        terms[f"rec/{name}"], terms[f"kl/{name}"] = rec.detach(), kl.detach()
        loss = loss + rec + hyper["beta"] * kl
    return ObjectiveOutput(loss, terms)


def data() -> tuple[MultimodalDataset, MultimodalDataset]:
    full = load_digits_multiview("train", 2, seed=0)
    as_double = MultimodalDataset({k: v.double() for k, v in full.data.items()}, full.labels)
    return as_double.subset(slice(0, 100)), as_double.subset(slice(100, 121))  # 21 validation samples: 11 + 10


def train(run_dir: Path | None, objective, epochs: int, distributed: DataParallel | None = None) -> Trainer:
    model = build_model(CFG, {"m0": (1, 8, 8), "m1": (1, 8, 8)}).double()
    trainer = Trainer(
        model, objective, lr=1e-2, batch_size=32, epochs=epochs, seed=3, run_dir=run_dir, progress=False,
        distributed=distributed, schedules={"beta": 0.5},
    )
    trainer.fit(*data())
    return trainer


def worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    parallel = DataParallel.from_process_group()
    out = Path(out)
    states = {"mean_elbo": train(out / "exact", mean_elbo, 2, parallel).model.state_dict()}
    states["elbo"] = train(out / "straight", ELBOObjective(RateELBO()), 2, parallel).model.state_dict()
    train(out / "resumed", ELBOObjective(RateELBO()), 1, parallel)
    states["resumed"] = train(out / "resumed", ELBOObjective(RateELBO()), 2, parallel).model.state_dict()
    states["missing_grads"] = average_with_missing_grads(parallel)
    torch.save(states, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def average_with_missing_grads(parallel: DataParallel) -> dict:
    """Parameter a has a gradient on both ranks, b on rank 1 only, c on none."""
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad = torch.full((2,), 1.0 + parallel.rank)
    if parallel.rank == 1:
        b.grad = torch.full((2,), 4.0)
    out = parallel.average(ObjectiveOutput(torch.tensor(float(parallel.rank)), {"t": torch.tensor(2.0)}), [a, b, c])
    return {"a": a.grad, "b": b.grad, "c_is_none": c.grad is None, "loss": out.loss, "t": out.terms["t"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process reference (trained first, so the forked workers inherit every module it imported:
    a fresh interpreter spends seconds importing torch and torch._dynamo), then the 2-rank runs."""
    out = tmp_path_factory.mktemp("ddp")
    single = train(out / "single", mean_elbo, 2)
    mp.start_processes(worker, args=(str(out / "init"), str(out)), nprocs=WORLD, start_method="fork")
    return out, single, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_ranks_equal_one_process_on_the_global_batch(runs):
    out, single, states = runs
    expected = single.model.state_dict()
    assert single.step == 6  # 100 samples, global batch 32: 3 steps per epoch
    for state in states:
        for name, value in expected.items():
            torch.testing.assert_close(state["mean_elbo"][name], value, rtol=0, atol=ATOL, msg=name)
    mine, theirs = read_metrics(out / "exact"), read_metrics(out / "single")
    assert [r["epoch"] for r in mine] == ["1", "2"]
    for key in ("train/loss", "val/loss", "train/kl/m0"):
        for a, b in zip(mine, theirs):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-12, abs=1e-12), key


def test_stochastic_replicas_stay_identical_and_resume_bit_identically(runs):
    out, _, (rank0, rank1) = runs
    for name in rank0["elbo"]:
        assert torch.equal(rank0["elbo"][name], rank1["elbo"][name]), name
        assert torch.equal(rank0["resumed"][name], rank0["elbo"][name]), name
        assert torch.equal(rank1["resumed"][name], rank1["elbo"][name]), name
    checkpoint = torch.load(sorted((out / "straight" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert len(checkpoint["rank_rng"]) == WORLD
    assert not torch.equal(checkpoint["rank_rng"][0]["torch"], checkpoint["rank_rng"][1]["torch"])


def test_average_takes_missing_gradients_as_zero(runs):
    for state in runs[2]:
        got = state["missing_grads"]
        assert torch.equal(got["a"], torch.full((2,), 1.5)) and torch.equal(got["b"], torch.full((2,), 2.0))
        assert got["c_is_none"] and float(got["loss"]) == 0.5 and float(got["t"]) == 2.0


def test_unequal_shards_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        DataParallel(0, 3).check(32, drop_last=True)
    with pytest.raises(ValueError, match="drop_last"):
        DataParallel(0, 2).check(32, drop_last=False)


def test_shard_cuts_the_global_batch_into_contiguous_equal_parts():
    batch = next(data()[0].batches(8))
    parts = [DataParallel(r, 2).shard(batch) for r in range(2)]
    torch.testing.assert_close(torch.cat([p.data["m0"] for p in parts]), batch.data["m0"])
    assert [p.batch_size for p in parts] == [4, 4]
    assert torch.equal(torch.cat([p.labels for p in parts]), batch.labels)
