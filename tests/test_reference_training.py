"""Reference training protocols (docs/reference_differences.md): the reference's steps replayed by hand on a fixed
batch with fixed noise, against pyromm's trainer."""
from __future__ import annotations

import copy

import torch
from torch import nn

from pyromm.data import MultimodalDataset
from pyromm.distributions import maf
from pyromm.infer import jnf_stages
from pyromm.likelihoods import Laplace
from pyromm.models import JNF, JointEncoder, Modality
from pyromm.infer import SubsetHMC
from pyromm.train import Trainer

D, DIM, EMB, N = 3, 5, 4, 16
NAMES = ("a", "b")
LR = 1e-2


class LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def tiny_jnf() -> JNF:
    torch.manual_seed(0)
    modalities = [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,)) for n in NAMES]
    joint = JointEncoder({n: nn.Linear(DIM, EMB) for n in NAMES}, {n: EMB for n in NAMES}, D, hidden=(8,))
    flows = {n: maf(D, 2, 8, 2) for n in NAMES}
    return JNF(modalities, D, joint, flows, SubsetHMC(num_samples=1, num_warmup=2, num_chains=1))


def tiny_data() -> MultimodalDataset:
    g = torch.Generator().manual_seed(1)
    u = torch.randn(N, 2, generator=g)
    return MultimodalDataset({m: u @ torch.randn(2, DIM, generator=g) + 0.1 * torch.randn(N, DIM, generator=g) for m in NAMES})


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class FixedJointDraw:
    """Stands in for ``model.joint_posterior``: its draws are μ + σ·ε with a fixed ε; records the batches."""

    def __init__(self, joint_posterior, eps: torch.Tensor) -> None:
        self.joint_posterior, self.eps, self.batches = joint_posterior, eps, []

    def __call__(self, batch):
        q = self.joint_posterior(batch)
        q.sample = lambda: q.base_dist.loc + q.base_dist.scale * self.eps
        self.batches.append(batch)
        return q


# --- row 15: MultiVae's JNF second stage ---------------------------------------------------------------------------


def test_multivae_jnf_freezes_the_joint_encoder_before_backward_so_its_first_flow_step_is_pyromms():
    """MultiVae's first step of the flow stage, replayed: z = μ + σ·ε drawn with gradient through the joint
    encoder, then ``joint_encoder.requires_grad_(False)`` and ``decoders.requires_grad_(False)``, the loss
    −(1/B) Σ_b Σ_m log q_m(z_b | x_m,b), backward, and a fresh Adam over every parameter of the model. Autograd
    accumulates no gradient into a leaf whose requires_grad is off when backward runs, so the joint encoder and
    decoders stay as they are and the step equals pyromm's (which freezes them from the start)."""
    model = tiny_jnf()
    data = tiny_data()
    stages = jnf_stages(model, 1, 1)
    Trainer(model, stages[0].objective, stages=stages[:1], batch_size=N, lr=LR, progress=False).fit(data)
    reference = copy.deepcopy(model)
    before = snapshot(model)
    eps = torch.randn(N, D, generator=torch.Generator().manual_seed(3))
    draw = FixedJointDraw(model.joint_posterior, eps)
    model.joint_posterior = draw
    history = Trainer(model, stages[1].objective, stages=stages[1:], batch_size=N, lr=LR, progress=False).fit(data)
    batch = draw.batches[-1]  # the earlier ones are the trainer's probes of the programs

    reference.train()
    reference.requires_grad_(True)  # MultiVae's stage 1 freezes nothing; pyromm's trainer froze the flows
    leaky = copy.deepcopy(reference)  # frozen only after backward: the joint encoder would get a gradient
    q = leaky.joint_posterior(batch)
    (-sum(q_m.log_prob(q.base_dist.loc + q.base_dist.scale * eps) for q_m in leaky.encode(batch).values()).mean()).backward()
    assert all(p.grad is not None for p in leaky.joint_encoder.parameters())
    q = reference.joint_posterior(batch)
    z = q.base_dist.loc + q.base_dist.scale * eps
    assert z.requires_grad
    reference.joint_encoder.requires_grad_(False)
    reference.decoders.requires_grad_(False)
    loss = -sum(q_m.log_prob(z) for q_m in reference.encode(batch).values()).mean()
    optimizer = torch.optim.Adam(reference.parameters(), lr=LR)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in reference.joint_encoder.parameters())
    optimizer.step()

    assert abs(history[0]["train/loss"] - loss.item()) < 1e-5
    after, replayed = snapshot(model), snapshot(reference)
    moved = set()
    for key, value in before.items():
        if key.startswith(("joint_encoder.", "decoders.")):
            assert torch.equal(replayed[key], value) and torch.equal(after[key], value), key
        torch.testing.assert_close(after[key], replayed[key], rtol=0, atol=1e-6)
        if not torch.equal(after[key], value):
            moved.add(key.split(".")[0])
    assert moved == {"encoders", "flows"}
