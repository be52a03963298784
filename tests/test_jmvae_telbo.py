"""JMVAE and TELBO (joint encoder + unimodal encoders): their Pyro programs against hand-written formulas and the
hand-written oracles, through pyro.infer.SVI and short Trainer runs."""
import math

import pyro
import pyro.infer
import pyro.optim
import pytest
import torch
from torch import nn

from oracles import JMVAEObjective, JointELBOStage, UnimodalELBOStage
from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.data.digits import load_digits_multiview
from pyromm.infer import ELBOObjective, RateELBO, telbo_stages
from pyromm.likelihoods import Laplace
from pyromm.models import Modality
from pyromm.models.base import MIN_SCALE
from pyromm.models.joint_encoder import JointEncoder, JointEncoderVAE
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import EpochWarmup, Trainer

D, DIM, EMB, B = 3, 4, 5, 6
NAMES = ("a", "b", "c")
WEIGHTS = {"a": 1.0, "b": 2.0, "c": 0.5}


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def model_of(names=NAMES, alpha=0.0):
    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,), WEIGHTS[n]) for n in names]
    joint = JointEncoder({n: nn.Linear(DIM, EMB) for n in names}, {n: EMB for n in names}, D, hidden=(8, 8))
    return JointEncoderVAE(mods, D, joint, alpha=alpha)


def batch_of(names=NAMES, mask=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return MultimodalBatch({n: torch.randn(B, DIM, generator=g, dtype=dtype) for n in names}, mask=mask)


JOINT = ELBOObjective(RateELBO("analytic"))


def unimodal_objective(model):
    return ELBOObjective(RateELBO("analytic"), model.unimodal_model, model.unimodal_guide)


def dataset_of(n=32, mask=None):
    """x_m = A_m u + 0.1 ε with a 2-d latent u shared by the three modalities."""
    g = torch.Generator().manual_seed(2)
    u = torch.randn(n, 2, generator=g)
    data = {m: u @ torch.randn(2, DIM, generator=g) + 0.1 * torch.randn(n, DIM, generator=g) for m in NAMES}
    return MultimodalDataset(data, mask=mask)


def joint_stats(model, batch, b):
    """μ(X), σ²(X) of sample b written out: heads → concatenation → Linear-ReLU-Linear-ReLU → linear heads."""
    enc = model.joint_encoder
    h = torch.cat([enc.heads[n](batch.data[n][b]) for n in NAMES])
    h = torch.relu(enc.body[2](torch.relu(enc.body[0](h))))
    return enc.loc(h), enc.log_var(h).exp()


def unimodal_stats(model, batch, name, b):
    loc, log_var = model.encoders[name](batch.data[name][b : b + 1])
    return loc[0], log_var[0].exp()


def kl_normal(m0, v0, m1, v1):
    """KL(N(m0, v0) ‖ N(m1, v1)) summed over dimensions, one dimension at a time."""
    return sum(0.5 * (math.log(v1[d] / v0[d]) + (v0[d] + (m0[d] - m1[d]) ** 2) / v1[d] - 1) for d in range(len(m0)))


def laplace_nll(model, name, z, x):
    loc = model.decoders[name](z)
    return sum(abs(x[d] - loc[d]) / 0.75 + math.log(1.5) for d in range(DIM))


def test_jmvae_programs_give_the_multivae_formula():
    """1/B Σ_b [Σ_m w_m(−log p(x_m|z)) + a(β KL(q(z|X) ‖ N) + α Σ_m KL(q(z|X) ‖ q_m))], z ~ q(z|X)."""
    alpha, beta, a = 0.3, 0.7, 0.4
    model, batch = model_of(alpha=alpha), batch_of()
    torch.manual_seed(7)
    out = JOINT(model, batch, {"beta": beta, "kl_warmup": a})
    torch.manual_seed(7)
    eps = torch.randn(B, D)
    with torch.no_grad():
        total = 0.0
        for b in range(B):
            loc, var = joint_stats(model, batch, b)
            z = loc + var.sqrt() * eps[b]
            rec = sum(WEIGHTS[n] * laplace_nll(model, n, z, batch.data[n][b]) for n in NAMES)
            kl_prior = kl_normal(loc, var, torch.zeros(D), torch.ones(D))
            kl_uni = sum(kl_normal(loc, var, *unimodal_stats(model, batch, n, b)) for n in NAMES)
            total += rec + a * (beta * kl_prior + alpha * kl_uni)
    torch.testing.assert_close(out.loss, torch.as_tensor(total / B, dtype=torch.float32), rtol=1e-5, atol=1e-5)
    assert set(out.terms) == {"rate", *(f"rate/z|{n}" for n in NAMES), *(f"rec/{n}" for n in NAMES)}
    torch.testing.assert_close(out.loss.detach(), sum(out.terms.values()))


def test_epoch_warmup_anneals_the_jmvae_kl_terms_in_the_trainer():
    """a(e) = min(1, e / warmup) per 1-based epoch, and every epoch's loss is the sum of its terms."""
    history = Trainer(
        model_of(alpha=0.5),
        RateELBO("analytic"),
        schedules={"beta": 1.0, "kl_warmup": EpochWarmup(1.0, 3)},
        batch_size=8,
        epochs=4,
        progress=False,
    ).fit(dataset_of())
    assert [row["hyper/kl_warmup"] for row in history] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    for row in history:
        terms = ["train/rate", *(f"train/rate/z|{n}" for n in NAMES), *(f"train/rec/{n}" for n in NAMES)]
        assert row["train/loss"] == pytest.approx(sum(row[t] for t in terms), rel=1e-5)


def test_subset_inference_rules():
    """|S| = M: joint encoder; |S| = 1: q_m; otherwise the closed-form product of the q_m without prior."""
    model, batch = model_of(), batch_of()
    with torch.no_grad():
        q_all = model.infer(batch, list(NAMES))
        for b in range(B):
            loc, var = joint_stats(model, batch, b)
            torch.testing.assert_close(q_all.base_dist.loc[b], loc)
            torch.testing.assert_close(q_all.base_dist.scale[b].pow(2), var)
        q_a = model.infer(batch, ["a"])
        loc_a, log_var_a = model.encoders["a"](batch.data["a"])
        assert torch.equal(q_a.base_dist.loc, loc_a)
        assert torch.equal(q_a.base_dist.scale, (0.5 * log_var_a).exp() + MIN_SCALE)
        q_ac = model.infer(batch, ["c", "a"])
        for b in range(B):
            (la, va), (lc, vc) = unimodal_stats(model, batch, "a", b), unimodal_stats(model, batch, "c", b)
            var = 1.0 / (1.0 / va + 1.0 / vc)
            torch.testing.assert_close(q_ac.base_dist.scale[b].pow(2), var)
            torch.testing.assert_close(q_ac.base_dist.loc[b], var * (la / va + lc / vc))


def test_the_rules_apply_per_sample_to_the_observed_modalities():
    """Samples missing c fall back to PoE(a, b); complete samples keep the joint encoder."""
    model = model_of()
    mask = {"c": torch.tensor([False, False, True, True, True, True])}
    batch = batch_of(mask=mask)
    with torch.no_grad():
        q = model.joint(batch)
        poe_ab = model.infer(batch, ["a", "b"])
        joint = model.joint_posterior(batch)
    for field in ("loc", "scale"):
        got = getattr(q.base_dist, field)
        assert torch.equal(got[:2], getattr(poe_ab.base_dist, field)[:2])
        assert torch.equal(got[2:], getattr(joint.base_dist, field)[2:])
    assert set(model.reconstruct(batch)) == set(NAMES)


@pytest.mark.parametrize("alpha, programs", [(0.1, "joint"), (0.0, "joint"), (0.0, "unimodal")])
def test_incomplete_batches_are_refused_by_name(alpha, programs):
    model = model_of(alpha=alpha)
    objective = JOINT if programs == "joint" else unimodal_objective(model)
    mask = {"b": torch.tensor([True, False, False, True, False, True])}
    with pytest.raises(ValueError, match="JointEncoderVAE needs complete batches: modality 'b' is missing for 3 samples"):
        objective(model, batch_of(mask=mask), {"beta": 1.0})
    with pytest.raises(ValueError, match="JointEncoderVAE needs complete batches: modality 'c' is not in the batch"):
        objective(model, batch_of(("a", "b")), {"beta": 1.0})
    complete_mask = {n: torch.ones(B, dtype=torch.bool) for n in NAMES}
    assert torch.isfinite(objective(model, batch_of(mask=complete_mask), {"beta": 1.0}).loss)


def test_incomplete_data_stops_pyro_training_and_the_trainer():
    model = model_of(alpha=0.1)
    mask = {"a": torch.tensor([True] * 5 + [False])}
    message = "JointEncoderVAE needs complete batches: modality 'a' is missing for 1 samples"
    with pytest.raises(ValueError, match=message):
        pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, batch_of(mask=mask), {"beta": 1.0})
    assert torch.isfinite(pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, batch_of(), {"beta": 1.0}))
    data_mask = {"c": torch.arange(32) % 4 != 0}
    trainer = Trainer(model, RateELBO("analytic"), batch_size=8, epochs=1, progress=False)
    with pytest.raises(ValueError, match="JointEncoderVAE needs complete batches: modality 'c' is missing"):
        trainer.fit(dataset_of(mask=data_mask))


def test_unimodal_stage_uses_each_encoders_own_variance():
    """Σ_m mean_b [w_m(−log p(x_m|z_m)) + β KL(N(μ_m, σ_m²) ‖ N)], z_m = μ_m + σ_m ε_m: σ_m, not the joint σ."""
    model, batch, beta = model_of(), batch_of(), 0.6
    with torch.no_grad():
        for n in NAMES:
            model.encoders[n].net.bias[D:] -= 2.0  # unimodal σ_m² ≈ e^-2 σ², far from the joint one
    torch.manual_seed(5)
    out = unimodal_objective(model)(model, batch, {"beta": beta})

    def hand(use_joint_variance):
        torch.manual_seed(5)
        eps = {n: torch.randn(B, D) for n in NAMES}
        total = 0.0
        with torch.no_grad():
            for n in NAMES:
                for b in range(B):
                    loc, var = unimodal_stats(model, batch, n, b)
                    if use_joint_variance:
                        var = joint_stats(model, batch, b)[1]
                    z = loc + var.sqrt() * eps[n][b]
                    nll = WEIGHTS[n] * laplace_nll(model, n, z, batch.data[n][b])
                    total += nll + beta * kl_normal(loc, var, torch.zeros(D), torch.ones(D))
        return torch.as_tensor(total / B, dtype=torch.float32)

    torch.testing.assert_close(out.loss, hand(False), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.loss, hand(True), rtol=1e-2)
    out.loss.backward()
    assert all(model.encoders[n].net.weight.grad.abs().sum() > 0 for n in NAMES)
    assert all(p.grad is None for p in model.joint_encoder.parameters())


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(before, module):
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_telbo_stages_train_the_joint_part_then_only_the_unimodal_encoders():
    model, data = model_of(), dataset_of()
    joint_stage, unimodal_stage = telbo_stages(model, epochs_joint=2, epochs_unimodal=2)
    encoders = snapshot(model.encoders)
    Trainer(model, RateELBO("analytic"), stages=[joint_stage], batch_size=8, progress=False).fit(data)
    assert same(encoders, model.encoders)
    joint, decoders, encoders = snapshot(model.joint_encoder), snapshot(model.decoders), snapshot(model.encoders)
    history = Trainer(model, RateELBO("analytic"), stages=[unimodal_stage], batch_size=8, progress=False).fit(data)
    assert same(joint, model.joint_encoder) and same(decoders, model.decoders)
    assert not any(torch.equal(encoders[k], v) for k, v in model.encoders.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert {f"train/rate/{n}" for n in NAMES} <= set(history[-1])


def test_telbo_refuses_unimodal_encoders_shared_with_the_joint_encoder():
    model = model_of()
    model.joint_encoder.heads["a"] = model.encoders["a"].net
    with pytest.raises(ValueError, match="the unimodal encoders share a parameter with the joint encoder and decoders"):
        telbo_stages(model, 1, 1)
    with pytest.raises(ValueError, match=r"TELBO's joint stage is the ELBO without unimodal KL terms, but the model has alpha=0.1"):
        telbo_stages(model_of(alpha=0.1), 1, 1)
    with pytest.raises(TypeError, match="TELBO trains a JointEncoderVAE, got Linear"):
        telbo_stages(nn.Linear(1, 1), 1, 1)


def test_jmvae_end_to_end_training_lowers_the_loss_and_infers_every_subset():
    model = model_of(alpha=0.1)
    history = Trainer(
        model,
        RateELBO("analytic"),
        schedules={"beta": 1.0, "kl_warmup": EpochWarmup(1.0, 2)},
        batch_size=8,
        epochs=6,
        lr=1e-2,
        progress=False,
    ).fit(dataset_of())
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    batch = batch_of()
    for subset in (["a"], ["a", "b"], list(NAMES)):
        assert model.infer(batch, subset).sample().shape == (B, D)


def test_telbo_end_to_end_runs_both_stages():
    model = model_of()
    history = Trainer(
        model,
        RateELBO("analytic"),
        stages=telbo_stages(model, epochs_joint=3, epochs_unimodal=3),
        batch_size=8,
        lr=1e-2,
        progress=False,
    ).fit(dataset_of())
    assert [row["stage"] for row in history] == ["telbo-joint"] * 3 + ["telbo-unimodal"] * 3
    assert history[2]["train/loss"] < history[0]["train/loss"]
    assert history[5]["train/loss"] < history[3]["train/loss"]


def test_joint_encoder_checks_its_heads():
    with pytest.raises(ValueError, match="embedding_dims"):
        JointEncoder({"a": nn.Linear(DIM, EMB)}, {"b": EMB}, D)
    encoder = JointEncoder({"a": nn.Linear(DIM, EMB)}, {"a": EMB + 1}, D)
    with pytest.raises(ValueError, match=r"head 'a' returned shape \(2, 5\), expected \(N, 6\)"):
        encoder({"a": torch.zeros(2, DIM)})
    with pytest.raises(ValueError, match="do not match the modalities"):
        JointEncoderVAE(model_of().modalities.values(), D, encoder)


def test_alpha_and_subset_inference_are_checked():
    modalities, encoder = model_of().modalities.values(), model_of().joint_encoder
    with pytest.raises(ValueError, match="alpha .* must be a finite number >= 0, got -0.1"):
        JointEncoderVAE(modalities, D, encoder, alpha=-0.1)
    with pytest.raises(TypeError, match="subset_inference must be None .* or a sampler .* got 'hmc'"):
        JointEncoderVAE(modalities, D, encoder, subset_inference="hmc")


# ----------------------------------------------------------------------------------------------- against the oracles


def gradients(loss, params):
    """d loss / d p for every parameter, zero where the loss does not depend on p."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assert_same_loss_and_gradients(oracle, programs, model, batch, hyper):
    """The oracle's loss and the ELBO's loss / B on the programs, and their gradients w.r.t. every parameter,
    from the same draws (seed 11)."""
    params = list(model.parameters())
    torch.manual_seed(11)
    expected = oracle(model, batch, hyper).loss
    torch.manual_seed(11)
    loss, _ = RateELBO("analytic").loss_and_terms(*programs, batch, hyper)
    torch.testing.assert_close(loss / B, expected, rtol=1e-12, atol=1e-12)
    for g_oracle, g_elbo in zip(gradients(expected, params), gradients(loss / B, params)):
        torch.testing.assert_close(g_elbo, g_oracle, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("hyper", [{"beta": 0.7}, {"beta": 0.7, "kl_warmup": 0.4}, {"beta": 1.0, "kl_warmup": 0.0}])
def test_jmvae_programs_equal_the_oracle(alpha, hyper):
    model = model_of(alpha=alpha).double()
    batch = batch_of(dtype=torch.float64)
    assert_same_loss_and_gradients(JMVAEObjective(alpha), (model.model, model.guide), model, batch, hyper)


def test_telbo_stage_programs_equal_the_oracles():
    model, batch, hyper = model_of().double(), batch_of(dtype=torch.float64), {"beta": 0.6}
    assert_same_loss_and_gradients(JointELBOStage(), (model.model, model.guide), model, batch, hyper)
    programs = (model.unimodal_model, model.unimodal_guide)
    assert_same_loss_and_gradients(UnimodalELBOStage(), programs, model, batch, hyper)


def test_svi_trains_the_jmvae_programs_and_its_loss_is_the_trainers_times_b():
    pyro.clear_param_store()
    model, batch, hyper = model_of(alpha=0.1), batch_of(), {"beta": 0.5, "kl_warmup": 0.5}
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), loss=RateELBO("analytic"))
    torch.manual_seed(4)
    svi_loss = svi.evaluate_loss(batch, hyper)
    torch.manual_seed(4)
    trainer_loss = Trainer(model, RateELBO("analytic"), progress=False).objective(model, batch, hyper).loss
    assert svi_loss == pytest.approx(B * trainer_loss.item(), rel=1e-6)
    before = [p.detach().clone() for p in model.joint_encoder.parameters()]
    losses = [svi.step(batch, hyper) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.joint_encoder.parameters()))


def test_telbo_stages_train_on_digits():
    data = load_digits_multiview("train", 2, seed=0).subset(slice(0, 64))
    torch.manual_seed(0)
    shapes = data.event_shapes
    modalities = [
        Modality(n, MLPEncoder(s, D, (16,)), MLPDecoder(D, s, (16,)), Laplace(len(s)), s) for n, s in shapes.items()
    ]
    heads = {n: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), EMB)) for n, s in shapes.items()}
    model = JointEncoderVAE(modalities, D, JointEncoder(heads, {n: EMB for n in shapes}, D, hidden=(16,)))
    history = Trainer(model, RateELBO("analytic"), stages=telbo_stages(model, 1, 1), batch_size=32,
                      progress=False).fit(data)
    assert [row["stage"] for row in history] == ["telbo-joint", "telbo-unimodal"]
    assert all(math.isfinite(row["train/loss"]) for row in history)
    assert {f"train/rate/{n}" for n in shapes} <= set(history[1])
