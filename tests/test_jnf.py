"""JNF / JNF-Shared: stages, the flow-fit and projector programs against the oracles and hand computations,
best-model reload, subset inference."""
import math
from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

from oracles import DCCAObjective, FlowPosteriorFit, InfoNCEObjective, JointELBOStage
from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.data.digits import load_digits_multiview
from pyromm.distributions import FlowConfigError, maf
from pyromm.infer import ELBOObjective, ProjectorPretraining, RateELBO, SubsetHMC, jnf_stages
from pyromm.infer.objective import ObjectiveOutput
from pyromm.infer.projectors import cca_loss, info_nce_loss, projections
from pyromm.likelihoods import Laplace
from pyromm.models import JNF, JointEncoder, Modality, ProjectedEncoder, UnimodalFlowPosterior
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.methods.common import build_modalities
from pyromm.methods.jnf import build_jnf, default_jnf_sampler
from pyromm.run import run
from pyromm.train import EpochWarmup, Stage, Trainer, load_checkpoint

D, DIM, EMB = 3, 5, 4
NAMES = ("a", "b", "c")
CHEAP_HMC = SubsetHMC(num_samples=2, num_warmup=5, num_chains=1, prior_power="once")


class LinearEncoder(nn.Module):
    def __init__(self, dim_in: int = DIM) -> None:
        super().__init__()
        self.net = nn.Linear(dim_in, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def jnf_model(names=NAMES, projected=False, context=False, flows=None):
    torch.manual_seed(0)
    modalities = []
    for n in names:
        encoder = ProjectedEncoder(nn.Linear(DIM, EMB), LinearEncoder(EMB)) if projected else LinearEncoder()
        modalities.append(Modality(n, encoder, nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,)))
    joint = JointEncoder({n: nn.Linear(DIM, EMB) for n in names}, {n: EMB for n in names}, D, hidden=(8,))
    if flows is None:
        flows = {n: maf(D, 2, 8, 2, context_features=2 * D if context else None) for n in names}
    return JNF(modalities, D, joint, flows, CHEAP_HMC)


def dataset_of(n=32, seed=2):
    """x_m = u A_m + 0.1 ε with a 2-d latent u shared by the modalities."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 2, generator=g)
    return MultimodalDataset({m: u @ torch.randn(2, DIM, generator=g) + 0.1 * torch.randn(n, DIM, generator=g) for m in NAMES})


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(model, stages, **options):
    settings = dict(batch_size=8, lr=1e-2, progress=False)
    return Trainer(model, stages[0].objective, stages=stages, **{**settings, **options})


# ----------------------------------------------------------------------------------------------- stages


@pytest.mark.parametrize("projected, context", [(False, False), (True, True)])
def test_flow_stage_leaves_joint_encoder_and_decoders_bit_identical(projected, context):
    model = jnf_model(projected=projected, context=context)
    stages = jnf_stages(model, 1, 1, *(("infonce", 1, 0.5) if projected else ()))
    fit(model, stages[:-1]).fit(dataset_of())
    before = {name: snapshot(getattr(model, name)) for name in ("joint_encoder", "decoders", "encoders", "flows")}
    history = fit(model, stages[-1:]).fit(dataset_of())
    assert history[0]["stage"] == "jnf-flows" and {f"train/rec/z|{n}" for n in NAMES} <= set(history[0])
    for part in ("joint_encoder", "decoders"):
        after = getattr(model, part).state_dict()
        assert all(torch.equal(before[part][k], after[k]) for k in after), part
    flows = model.flows.state_dict()
    assert any(not torch.equal(before["flows"][k], flows[k]) for k in flows)
    encoders = model.encoders.state_dict()
    for key, value in encoders.items():
        assert torch.equal(before["encoders"][key], value) == (".projector." in key), key


def test_stages_of_jnf_shared_and_their_checks():
    model = jnf_model(projected=True)
    stages = jnf_stages(model, 2, 3, "dcca", 1)
    assert [(s.name, s.epochs, s.reset_optimizer) for s in stages] == [
        ("jnf-projectors", 1, True),
        ("jnf-joint", 2, True),
        ("jnf-flows", 3, True),
    ]
    projector_ids = {id(p) for p in stages[0].trainable(model)}
    assert projector_ids == {id(p) for m in model.projectors.values() for p in m.parameters()}
    assert not projector_ids & {id(p) for p in stages[2].trainable(model)}
    with pytest.raises(ValueError, match="modality 'a' has none"):
        jnf_stages(jnf_model(), 1, 1, "dcca", 1)
    with pytest.raises(ValueError, match="epochs_projectors >= 1"):
        jnf_stages(model, 1, 1, "dcca", 0)
    with pytest.raises(ValueError, match="unknown projector objective 'cca'"):
        jnf_stages(model, 1, 1, "cca", 1)
    with pytest.raises(TypeError, match="JNF trains a JNF, got Linear"):
        jnf_stages(nn.Linear(1, 1), 1, 1)


FLOW_FIT = RateELBO("analytic")


def flow_fit(model, batch):
    """The trainer's loss of JNF's second stage on ``batch``."""
    return ELBOObjective(FLOW_FIT, model.flow_fit_model, model.flow_fit_guide)(model, batch, {})


def test_flow_fit_with_identity_flows_is_the_gaussian_negative_log_likelihood():
    """Identity-initialised flows: −log q_m(z | x_m) = −log N(z; μ_m, σ_m²), z ~ q(z | X)."""
    model, batch = jnf_model(), dataset_of().batch(slice(0, 6))
    torch.manual_seed(3)
    out = flow_fit(model, batch)
    torch.manual_seed(3)
    with torch.no_grad():
        z = model.joint_posterior(batch).sample()
        gaussians = super(JNF, model).encode(batch)
        expected = sum(-gaussians[n].log_prob(z).mean() for n in NAMES)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- best-model reload


def val_dip_at_epoch_2(model, batch, hyper):
    """Training: the joint ELBO. Validation: (3a − 2)² with a = e/3, i.e. 1, 0, 1 for epochs 1, 2, 3."""
    if model.training:
        return jnf_stages(model, 1, 1)[0].objective(model, batch, hyper)
    return ObjectiveOutput(torch.tensor((3 * hyper["kl_warmup"] - 2) ** 2), {})


class CrashInEpoch3:
    def __init__(self):
        self.calls = 0

    def __call__(self, model, batch, hyper):
        if model.training:
            self.calls += 1
            if self.calls == 9:  # 4 steps per epoch: the first step of epoch 3
                raise KeyboardInterrupt
        return val_dip_at_epoch_2(model, batch, hyper)


def test_best_epoch_is_restored_at_stage_end_and_survives_resume(tmp_path):
    train, val = dataset_of(), dataset_of(8, seed=5)
    options = dict(schedules={"beta": 1.0, "kl_warmup": EpochWarmup(1.0, 3)}, restore_best=True, keep_last=None)

    def stages(objective=val_dip_at_epoch_2):
        return [Stage("joint", 3, objective)]

    model = jnf_model()
    history = fit(model, stages(), run_dir=tmp_path / "ref", **options).fit(train, val)
    assert [row["val/loss"] for row in history] == [1.0, 0.0, 1.0]
    assert history[-1]["best_epoch"] == 2 and "best_epoch" not in history[1]
    epoch2 = load_checkpoint(tmp_path / "ref" / "checkpoints" / "epoch-00002.pt")["model"]
    assert all(torch.equal(v, epoch2[k]) for k, v in model.state_dict().items())
    last = jnf_model()
    fit(last, stages(), **{**options, "restore_best": False}).fit(train, val)
    assert any(not torch.equal(v, epoch2[k]) for k, v in last.state_dict().items())

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(jnf_model(), stages(CrashInEpoch3()), run_dir=run_dir, **options).fit(train, val)
    assert load_checkpoint(run_dir / "checkpoints" / "epoch-00002.pt")["best"]["epoch"] == 2
    resumed = jnf_model()
    fit(resumed, stages(), run_dir=run_dir, **options).fit(train, val)
    assert all(torch.equal(v, epoch2[k]) for k, v in resumed.state_dict().items())


def test_without_validation_nothing_is_restored():
    model = jnf_model()
    history = fit(model, jnf_stages(model, 1, 1), restore_best=True).fit(dataset_of())
    assert all("best_epoch" not in row for row in history)


# ----------------------------------------------------------------------------------------------- projector objectives


def test_dcca_loss_is_minus_the_total_canonical_correlation():
    """Views mixing sources with correlations ρ = (0.9, 0.5, 0.2) (plus one independent dimension): without
    regularisation the loss is −Σ_i ρ̂_i, the sample canonical correlations (whitened SVD), ≈ −Σ_i ρ_i."""
    rho = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 20000
    u, v = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 4, generator=g, dtype=torch.float64)
    x1 = u @ torch.randn(3, 3, generator=g, dtype=torch.float64)
    x2 = torch.cat([rho * u + (1 - rho**2).sqrt() * v[:, :3], v[:, 3:]], 1) @ torch.randn(4, 4, generator=g, dtype=torch.float64)

    def correlations(r1, r2):
        """Singular values of Σ₁₁^{-1/2} Σ₁₂ Σ₂₂^{-1/2} (ridge covariances), padded with zeros to o2 = 4."""
        a, b = x1.numpy() - x1.numpy().mean(0), x2.numpy() - x2.numpy().mean(0)

        def inv_sqrt(c):
            values, vectors = np.linalg.eigh(c)
            return vectors @ np.diag(values**-0.5) @ vectors.T

        t = inv_sqrt(a.T @ a / (n - 1) + r1 * np.eye(3)) @ (a.T @ b / (n - 1)) @ inv_sqrt(b.T @ b / (n - 1) + r2 * np.eye(4))
        return np.concatenate([np.linalg.svd(t, compute_uv=False), [0.0]])

    sample_rho = correlations(0.0, 0.0)
    loss = cca_loss(x1, x2, r1=0.0, r2=0.0)
    assert loss.item() == pytest.approx(-sample_rho.sum(), abs=1e-4)
    assert loss.item() == pytest.approx(-rho.sum().item(), abs=0.03)
    assert cca_loss(x1, x2, r1=0.0, r2=0.0, top_k=1).item() == pytest.approx(-sample_rho[0], abs=1e-6)
    # ridge r1, r2 on the covariances and, as in the reference, r1 added to the eigenvalues of TᵀT
    ridge = np.sqrt(correlations(1e-3, 2e-3) ** 2 + 1e-3).sum()
    assert cca_loss(x1, x2, r1=1e-3, r2=2e-3).item() == pytest.approx(-ridge, abs=1e-6)


def pretraining_loss(model, batch, objective, **options):
    """The trainer's loss of JNF-Shared's projector stage on ``batch``."""
    pretraining = ProjectorPretraining(model, objective, **options)
    return ELBOObjective(RateELBO("analytic"), pretraining.model, pretraining.guide)(model, batch, {})


def test_dcca_objective_sums_the_pairwise_losses():
    model, batch = jnf_model(projected=True), dataset_of().batch(slice(0, 16))
    out = pretraining_loss(model, batch, "dcca", r1=1e-2, r2=1e-3)
    g = {n: model.projectors[n](batch.data[n]) for n in NAMES}
    for a, b in combinations(NAMES, 2):
        torch.testing.assert_close(out.terms[f"factor/cca/{a}-{b}"], cca_loss(g[a], g[b], 1e-2, 1e-3).detach())
    torch.testing.assert_close(out.loss.detach(), sum(out.terms.values()))
    with pytest.raises(ValueError, match="same N >= 2"):
        cca_loss(g["a"][:1], g["b"][:1])


def test_info_nce_matches_the_formula_by_hand():
    """3 samples, 2 views: mean over the 6 anchors of −log(exp(s_pos) / Σ_{k≠a} exp(s_ak)), s = ê_a·ê_k / τ."""
    g = torch.Generator().manual_seed(1)
    e1, e2, tau = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), 0.3
    rows = [r / math.hypot(*r.tolist()) for r in torch.cat([e1, e2])]
    total = 0.0
    for a in range(6):
        sims = {k: float(rows[a] @ rows[k]) / tau for k in range(6) if k != a}
        positive = (a + 3) % 6
        total += -math.log(math.exp(sims[positive]) / sum(math.exp(s) for s in sims.values()))
    assert info_nce_loss(e1, e2, tau).item() == pytest.approx(total / 6, rel=1e-5)
    model, batch = jnf_model(projected=True), dataset_of().batch(slice(0, 5))
    out = pretraining_loss(model, batch, "infonce", temperature=tau)
    g = {n: model.projectors[n](batch.data[n]) for n in NAMES}
    expected = sum(info_nce_loss(g[a], g[b], tau) for a, b in combinations(NAMES, 2))
    torch.testing.assert_close(out.loss, expected)


# ----------------------------------------------------------------------------------------------- inference


def test_subset_inference_rules_and_cached_encodings():
    model, batch = jnf_model(context=True), dataset_of().batch(slice(0, 6))
    calls = {n: 0 for n in NAMES}
    for n in NAMES:
        model.encoders[n].register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1))
    joint = model.infer(batch, list(NAMES))
    torch.testing.assert_close(joint.mean, model.joint_posterior(batch).mean)
    single = model.infer(batch, ["b"])
    assert isinstance(single, UnimodalFlowPosterior) and single.sample().shape == (6, D)
    calls.update({n: 0 for n in NAMES})
    pair = model.infer(batch, ["a", "c"])
    assert calls == {"a": 1, "b": 0, "c": 1}  # encoded once, not per leapfrog step
    z = pair.sample((4,))
    assert z.shape == (4, 6, D) and bool(torch.isfinite(z).all())
    identity = jnf_model()
    with torch.no_grad():
        torch.testing.assert_close(identity.encode(batch)["a"].mean, super(JNF, identity).encode(batch)["a"].mean)


def test_jnf_trains_on_digits_and_samples_subset_posteriors():
    data = load_digits_multiview("train", 3, seed=0).subset(slice(0, 96))
    torch.manual_seed(0)
    shapes = data.event_shapes
    modalities = [
        Modality(n, MLPEncoder(s, D, (16,)), MLPDecoder(D, s, (16,)), Laplace(len(s)), s) for n, s in shapes.items()
    ]
    heads = {n: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), EMB)) for n, s in shapes.items()}
    model = JNF(modalities, D, JointEncoder(heads, {n: EMB for n in shapes}, D, hidden=(16,)),
                {n: maf(D, 2, 8, 2) for n in shapes}, CHEAP_HMC)
    history = fit(model, jnf_stages(model, 1, 1), batch_size=32).fit(data)
    assert [row["stage"] for row in history] == ["jnf-joint", "jnf-flows"]
    batch = data.batch(slice(0, 10))
    names = list(shapes)
    z = model.infer(batch, names[:2]).sample((3,))
    assert z.shape == (3, 10, D) and bool(torch.isfinite(z).all())


def test_bad_inputs_are_named():
    with pytest.raises(FlowConfigError, match="modality 'b'.*dimension 4, the latent on 3"):
        jnf_model(flows={"a": maf(D), "b": maf(4), "c": maf(D)})
    with pytest.raises(FlowConfigError, match="modality 'a'.*context of 5 features"):
        jnf_model(flows={n: maf(D, context_features=5) for n in NAMES})
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        jnf_model(flows={n: maf(D) for n in "ab"})
    model, batch = jnf_model(), dataset_of().batch(slice(0, 4))
    with pytest.raises(ValueError, match="subset of modalities is empty"):
        model.infer(batch, [])
    with pytest.raises(KeyError, match="unknown modality 'z'"):
        model.infer(batch, ["a", "z"])
    masked = MultimodalBatch(batch.data, {"a": torch.tensor([True, False, True, True])})
    with pytest.raises(ValueError, match=r"JNF's posterior given \['a', 'b'\] needs complete batches: modality 'a' is missing for 1 samples"):
        model.infer(masked, ["a", "b"])
    with pytest.raises(ConfigError, match="each needs >= 1"):
        RunConfig(model="jnf_shared", epochs=3, second_stage_epochs=2)
    with pytest.raises(TypeError, match="JNF needs a subset sampler"):
        JNF(list(model.modalities.values()), D, model.joint_encoder, dict(model.flows), None)
    with pytest.raises(ValueError, match="projector pretraining needs a projector for every modality; modality 'a' has none"):
        ProjectorPretraining(model)


# ----------------------------------------------------------------------------------------------- pyromm run

TINY = dict(dataset="digits", num_views=2, latent_dim=4, hidden=[32], batch_size=64, train_limit=192, test_limit=64,
            classifier_train_limit=192, classifier_epochs=1, eval_num_train=192, flow_hidden=16)


@pytest.mark.parametrize(
    "settings",
    [
        dict(model="jnf", epochs=2),
        dict(model="jnf_shared", epochs=3, projection_dim=6),
        dict(model="jnf_shared", epochs=3, projection_dim=6, projector_objective="infonce", flow_context=True, val_fraction=0.25,
             restore_best=True),
    ],
)
def test_run_trains_and_evaluates_jnf(tmp_path, settings):
    results = run(RunConfig(**TINY, **settings), tmp_path, progress=False)
    assert 0.0 <= results["latent_acc_mean"] <= 1.0 and 0.0 <= results["coherence_cross_mean"] <= 1.0
    assert math.isfinite(results["rec_nll"])


def test_projector_pretraining_refuses_incomplete_batches():
    model, batch = jnf_model(projected=True), dataset_of().batch(slice(0, 4))
    assert set(projections(model, batch)) == set(NAMES)
    masked = MultimodalBatch(batch.data, {"b": torch.tensor([True, True, False, True])})
    with pytest.raises(ValueError, match="projector pretraining needs complete batches: modality 'b' is missing for 1"):
        projections(model, masked)


# ----------------------------------------------------------------------------------------------- against the oracles


def gradients(loss, params):
    """d loss / d p for every parameter, zero where the loss does not depend on p."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assert_same_loss_and_gradients(oracle, programs, model, batch, hyper=None):
    """The oracle's loss and RateELBO's loss / B on the programs, and every parameter's gradient, under seed 11."""
    params, n, hyper = list(model.parameters()), batch.batch_size, hyper or {}
    torch.manual_seed(11)
    expected = oracle(model, batch, hyper).loss
    torch.manual_seed(11)
    loss, _ = RateELBO("analytic").loss_and_terms(*programs, batch, hyper)
    torch.testing.assert_close(loss / n, expected, rtol=1e-12, atol=1e-12)
    for g_oracle, g_elbo in zip(gradients(expected, params), gradients(loss / n, params)):
        torch.testing.assert_close(g_elbo, g_oracle, rtol=1e-10, atol=1e-12)


def float64_batch(n=8):
    batch = dataset_of().batch(slice(0, n))
    return MultimodalBatch({k: v.double() for k, v in batch.data.items()})


@pytest.mark.parametrize("projected, context", [(False, False), (True, True)])
def test_joint_and_flow_fit_programs_equal_the_oracles(projected, context):
    model, batch = jnf_model(projected=projected, context=context).double(), float64_batch()
    assert_same_loss_and_gradients(JointELBOStage("JNF"), (model.model, model.guide), model, batch, {"beta": 0.8})
    programs = (model.flow_fit_model, model.flow_fit_guide)
    assert_same_loss_and_gradients(FlowPosteriorFit(), programs, model, batch)


@pytest.mark.parametrize(
    "objective, oracle",
    [
        ("dcca", DCCAObjective(r1=1e-2, r2=1e-3)),
        ("infonce", InfoNCEObjective(0.3)),
    ],
)
def test_projector_pretraining_programs_equal_the_oracles(objective, oracle):
    model = jnf_model(projected=True).double()
    pretraining = ProjectorPretraining(model, objective, temperature=0.3, r1=1e-2, r2=1e-3)
    assert_same_loss_and_gradients(oracle, (pretraining.model, pretraining.guide), model, float64_batch(16))


def test_build_jnf_defaults_to_the_reference_subset_sampler():
    cfg = RunConfig(**TINY, model="jnf", epochs=2)
    shapes = {"m0": (64,), "m1": (64,)}
    model = build_jnf(cfg, build_modalities(cfg, shapes))
    assert model.subset_sampler == default_jnf_sampler() == SubsetHMC(1, 100, 1, 10, "once")
    assert build_jnf(cfg, build_modalities(cfg, shapes), CHEAP_HMC).subset_sampler is CHEAP_HMC
