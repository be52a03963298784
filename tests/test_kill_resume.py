"""Kill CPU training runs in subprocesses at random steps, resume them, and compare with uninterrupted runs.

Each run pauses at its training call ``pause_at`` (0-based step) after writing ``control/paused``; the test
then sends the signal (SIGKILL: no checkpoint; SIGTERM: the trainer finishes the step and checkpoints it) and
writes ``control/go`` so that the step can complete. The four runs to stop go in parallel; one process then
resumes them all and trains their uninterrupted references, so both sides use the same threads and kernels.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pyromm.train import CheckpointDir, load_checkpoint

SAMPLES, BATCH, EPOCHS = 48, 8, 4
STEPS_PER_EPOCH = SAMPLES // BATCH
STEPS = STEPS_PER_EPOCH * EPOCHS
SIGNALS = {"single": signal.SIGKILL, "two_stage": signal.SIGKILL, "annealed": signal.SIGKILL, "sigterm": signal.SIGTERM}

SCRIPT = r'''
import sys
import time
from pathlib import Path

import torch

from pyromm.data import MultimodalDataset
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Exponential, Stage, Trainer

torch.set_num_threads(1)
pause_at, control, runs = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]  # runs: kind, run_dir, kind, ...
SAMPLES, BATCH, EPOCHS = 48, 8, 4


class PauseAt:
    """The jensen-rate ELBO; training call ``pause_at`` writes control/paused, then waits for control/go."""

    def __init__(self):
        self.calls, self.elbo = 0, ELBOObjective(RateELBO("jensen"))

    def __call__(self, model, batch, hyper):
        if model.training:
            if self.calls == pause_at:
                (control / "paused").write_text("")
                while not (control / "go").exists():
                    time.sleep(0.01)
            self.calls += 1
        return self.elbo(model, batch, hyper)


def train(kind, run_dir):
    g = torch.Generator().manual_seed(0)
    data = MultimodalDataset({m: torch.randn(SAMPLES, 6, generator=g) for m in ("m0", "m1")})
    torch.manual_seed(0)
    nets = {m: (MLPEncoder(6, 2, hidden=(16,)), MLPDecoder(2, 6, hidden=(16,))) for m in ("m0", "m1")}
    model = mmvm_vae([Modality(m, *nets[m], Laplace(1), (6,)) for m in nets], latent_dim=2)
    options = dict(batch_size=BATCH, lr=5e-3, progress=False, run_dir=run_dir, schedules={"beta": 1.0, "alpha": 0.2})
    if kind == "two_stage":  # JNF-like: train everything, then only the encoders with the decoders frozen
        encoders_only = Stage("encoders", EPOCHS // 2, trainable=lambda m: m.encoders.parameters())
        options["stages"] = [Stage("joint", EPOCHS // 2), encoders_only]
    else:
        options["epochs"] = EPOCHS
    if kind == "annealed":
        options["schedules"] = {"beta": 1.0, "alpha": Exponential(0.9, 0.0, SAMPLES // BATCH * EPOCHS)}
    if kind == "sigterm":
        options["checkpoint_every"] = 2
    Trainer(model, PauseAt(), **options).fit(data)
    torch.save(model.state_dict(), Path(run_dir) / "final.pt")


for kind, run_dir in zip(runs[::2], runs[1::2]):
    train(kind, run_dir)
'''


def launch(script, pause_at, control, *runs):
    """Start ``script`` on ``runs`` (pairs of kind and run directory)."""
    control.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(script), str(pause_at), str(control), *map(str, runs)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(path, proc, what):
    deadline = time.monotonic() + 90
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}:\n{proc.communicate()[0].decode()}")
        time.sleep(0.01)


@dataclass
class Stopped:
    """A run stopped at ``step``: its exit code, the epochs logged and its newest checkpoint's name and
    (epoch, batch, step) when stopped, and its folder (``run`` resumed to the end, ``ref`` uninterrupted)."""

    step: int
    code: int
    logged: list
    latest: str | None
    counters: tuple | None
    root: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One stopped-then-resumed run per kind: single, two_stage and annealed get SIGKILL, sigterm SIGTERM."""
    root = tmp_path_factory.mktemp("kill_resume")
    script = root / "train_run.py"
    script.write_text(SCRIPT)
    # SIGKILL at steps 1..STEPS-1; SIGTERM at 0..STEPS-2 so that the run is unfinished after finishing the step
    steps = {k: random.randrange(1, STEPS) if sig == signal.SIGKILL else random.randrange(STEPS - 1)
             for k, sig in SIGNALS.items()}
    procs = {k: launch(script, steps[k], root / k / "control", k, root / k / "run") for k in SIGNALS}
    try:
        for kind, proc in procs.items():
            wait_for(root / kind / "control" / "paused", proc, f"{kind} run never reached step {steps[kind]}")
            os.kill(proc.pid, SIGNALS[kind])
            (root / kind / "control" / "go").write_text("")
        for proc in procs.values():
            proc.communicate(timeout=90)
    finally:
        for proc in procs.values():
            proc.kill()
    stopped = {}
    for kind, proc in procs.items():
        checkpoints = CheckpointDir(root / kind / "run" / "checkpoints").paths()
        latest = load_checkpoint(checkpoints[-1]) if checkpoints else None
        stopped[kind] = Stopped(
            steps[kind],
            proc.returncode,
            [row["epoch"] for row in metrics(root / kind / "run")],
            checkpoints[-1].name if checkpoints else None,
            (latest["epoch"], latest["batch"], latest["step"]) if latest else None,
            root / kind,
        )
    pairs = [arg for k in SIGNALS for arg in (k, root / k / "run", k, root / k / "ref")]
    resume = launch(script, -1, root / "control", *pairs)
    output = resume.communicate(timeout=300)[0].decode()
    assert resume.returncode == 0, output
    return stopped


def metrics(run_dir):
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_same_run(run_dir, ref_dir, context):
    final = torch.load(run_dir / "final.pt", weights_only=True)
    expected = torch.load(ref_dir / "final.pt", weights_only=True)
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value), f"{context}: {name} differs"
    rows, ref_rows = metrics(run_dir), metrics(ref_dir)
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1)), context
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(rows) == drop(ref_rows), context


@pytest.mark.parametrize("kind", ["single", "two_stage", "annealed"])
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(runs, kind):
    run = runs[kind]
    context = f"{kind} run killed at step {run.step}"
    assert run.code == -signal.SIGKILL, context
    assert run.logged == list(range(1, run.step // STEPS_PER_EPOCH + 1)), context
    assert_same_run(run.root / "run", run.root / "ref", context)


def test_sigterm_checkpoints_the_current_step_then_resume_is_bit_identical(runs):
    run = runs["sigterm"]
    context = f"run stopped by SIGTERM at step {run.step}"
    assert run.code == 128 + signal.SIGTERM, context
    epoch, batch = divmod(run.step + 1, STEPS_PER_EPOCH)
    assert run.latest == (f"epoch-{epoch:05d}-batch-{batch:06d}.pt" if batch else f"epoch-{epoch:05d}.pt"), context
    assert run.counters == (epoch, batch, run.step + 1), context
    assert_same_run(run.root / "run", run.root / "ref", context)
