"""Reference modes (docs/reference_differences.md): each option against a hand computation of the reference's
formula on a fixed batch with fixed noise, the MoPoE prior-expert placement against closed forms, and the
named errors for bad reference settings."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import pyro.distributions as dist
from sklearn.linear_model import LogisticRegression

from pyromm import reference as references
from pyromm.aggregation import mixture_of_experts, mixture_of_products
from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset
from pyromm.data.batch import MultimodalBatch
from pyromm.evaluation import latent_classification
from pyromm.infer.subset_sampling import SubsetHMC
from pyromm.reference_sampling import ReferenceSubsetHMC
from pyromm.run import build_elbo, build_model, build_objective, build_schedules, evaluate_run, evaluation_test_set, train
from pyromm.train import CheckpointDir

SHAPE = (1, 8, 8)
DOC = Path(__file__).resolve().parents[1] / "docs" / "reference_differences.md"


def names_of(m: int) -> list[str]:
    return [f"m{i}" for i in range(m)]


def make_model(cfg: RunConfig, m: int = 3):
    return build_model(cfg.replace(latent_dim=4, hidden=[16]), {n: SHAPE for n in names_of(m)})


def make_batch(m: int = 3, b: int = 6, seed: int = 0) -> MultimodalBatch:
    g = torch.Generator().manual_seed(seed)
    return MultimodalBatch({n: torch.rand(b, *SHAPE, generator=g) for n in names_of(m)})


def hyper_at_start(cfg: RunConfig) -> dict[str, float]:
    return {k: float(v(0, 1)) if callable(v) else float(v) for k, v in build_schedules(cfg, 10).items()}


def encoder_gaussians(model, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(μ_m, log σ_m²) straight from the encoders."""
    with torch.no_grad():
        return {n: model.encoders[n](x) for n, x in batch.data.items()}


def kl_to_standard_normal(loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """½ Σ_d (σ² + μ² − 1 − log σ²), per sample: the reference's σ = exp(log_var / 2), no floor."""
    return 0.5 * (log_var.exp() + loc**2 - 1.0 - log_var).sum(-1)


# --- independent VAEs: β² ---------------------------------------------------------------------------------------


def loss_at(cfg: RunConfig, model, batch, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return build_objective(cfg)(model, batch, hyper_at_start(cfg)).loss


def test_independent_mmvm_code_rate_is_beta_squared_times_the_summed_kl():
    cfg = RunConfig(model="independent", beta=4.0, reference="mmvm-code")
    model, batch = make_model(cfg), make_batch()
    # the reconstruction draws the same z at every β (the rate draws no noise), so the loss difference to β = 0
    # is the rate alone
    rate = loss_at(cfg, model, batch) - loss_at(cfg.replace(beta=0.0), model, batch)
    summed_kl = sum(kl_to_standard_normal(*p) for p in encoder_gaussians(model, batch).values()).mean()
    torch.testing.assert_close(rate, 16.0 * summed_kl)
    default = cfg.replace(reference=None)  # pyromm: β·Σ KL_m, and the floor 1e-6 (hence the tolerance)
    torch.testing.assert_close(loss_at(default, model, batch) - loss_at(default.replace(beta=0.0), model, batch),
                               4.0 * summed_kl, rtol=1e-4, atol=1e-4)


def test_beta_squared_is_the_schedule_and_ramps_with_kl_warmup():
    cfg = RunConfig(model="independent", beta=3.0, beta_squared=True, kl_warmup_epochs=2)
    beta = build_schedules(cfg, steps_per_epoch=5)["beta"]
    assert beta(10, 3) == 9.0 and beta(5, 2) == pytest.approx(4.5)
    assert build_schedules(cfg.replace(beta_squared=None, kl_warmup_epochs=0), 5)["beta"] == 3.0


# --- MoE/MoPoE: the reference's blocks ----------------------------------------------------------------------------


def reference_blocks(batch_size: int, num_components: int) -> list[int]:
    """The MMVM code's stratified selection: block k spans [start_k, start_k + ⌊B·(1/K)⌋), the last block to B."""
    index, start = [], 0
    for k in range(num_components):
        end = batch_size if k == num_components - 1 else start + (batch_size * 1) // num_components
        index += [k] * (end - start)
        start = end
    return index


@pytest.mark.parametrize("batch_size", [42, 128, 256])
@pytest.mark.parametrize("model_name,modalities,components", [("moe", 3, 3), ("moe", 7, 7), ("mopoe", 2, 3), ("mopoe", 3, 7)])
def test_mmvm_code_blocks_give_the_remainder_to_the_last_block(batch_size, model_name, modalities, components):
    cfg = RunConfig(model=model_name, reference="mmvm-code")
    assert cfg.setting("mixture_blocks") == "remainder_last"
    model = make_model(cfg, modalities)
    with torch.no_grad():
        q = model.joint(make_batch(modalities, batch_size))
    assert q.component_index().tolist() == reference_blocks(batch_size, components)


def test_block_sizes_at_batch_128_with_three_components():
    posteriors = {n: dist.Normal(torch.zeros(128, 2), 1.0).to_event(1) for n in "abc"}
    reference = mixture_of_experts(posteriors, blocks="remainder_last").component_index()
    even = mixture_of_experts(posteriors).component_index()
    assert torch.bincount(reference).tolist() == [42, 42, 44]
    assert torch.bincount(even).tolist() == [43, 42, 43]  # pyromm's default, unchanged


def test_remainder_goes_to_the_last_observed_component():
    posteriors = {n: dist.Normal(torch.zeros(10, 2), 1.0).to_event(1) for n in "abc"}
    mask = {"c": torch.zeros(10, dtype=torch.bool)}
    index = mixture_of_experts(posteriors, mask, blocks="remainder_last").component_index()
    assert index.tolist() == [0] * 5 + [1] * 5
    index = mixture_of_experts({n: posteriors[n] for n in "ab"}, blocks="remainder_last").component_index()
    assert index.tolist() == [0] * 5 + [1] * 5


def test_selected_draw_uses_the_reference_block_component():
    cfg = RunConfig(model="moe", reference="mmvm-code")
    model, batch = make_model(cfg, 3), make_batch(3, 10)
    gaussians = encoder_gaussians(model, batch)
    with torch.no_grad():
        q = model.joint(batch)
        torch.manual_seed(0)
        z = q.rsample()
    torch.manual_seed(0)
    eps = torch.randn(10, 4)
    for b, k in enumerate(reference_blocks(10, 3)):
        loc, log_var = gaussians[f"m{k}"]
        torch.testing.assert_close(z[b], loc[b] + torch.exp(0.5 * log_var[b]) * eps[b])


# --- MoPoE: the prior expert only in the subset of all the model's modalities ------------------------------------


def gaussian(loc, log_var):
    return loc, torch.exp(0.5 * log_var)


def product(*experts, prior: bool = False):
    """Closed-form PoE: 1/σ² = Σ 1/σ_e² (+ 1), μ = σ² Σ μ_e/σ_e²."""
    precision = sum(1.0 / s**2 for _, s in experts) + (1.0 if prior else 0.0)
    loc = sum(m / s**2 for m, s in experts) / precision
    return loc, precision.rsqrt()


def mixture_log_prob(z, components):
    logs = torch.stack([dist.Normal(m, s).log_prob(z).sum(-1) for m, s in components])
    return torch.logsumexp(logs, 0) - math.log(len(components))


@pytest.mark.parametrize("model_name", ["mopoe_reference", "mopoe"])
def test_mopoe_given_one_modality_is_its_unimodal_posterior(model_name):
    model, batch = make_model(RunConfig(model=model_name), 3), make_batch(3)
    loc, scale = gaussian(*encoder_gaussians(model, batch)["m1"])
    with torch.no_grad():
        q = model.infer(batch, ["m1"])
    torch.testing.assert_close(q.locs[:, 0], loc)
    torch.testing.assert_close(q.scales[:, 0], scale + 1e-6)


def test_mopoe_given_two_of_three_is_the_mixture_of_q_a_q_b_and_their_product_without_prior():
    model, batch = make_model(RunConfig(model="mopoe_reference"), 3), make_batch(3)
    model.scale_floor = 0.0
    g = encoder_gaussians(model, batch)
    qa, qb = gaussian(*g["m0"]), gaussian(*g["m2"])
    expected = [qa, qb, product(qa, qb)]
    with torch.no_grad():
        q = model.infer(batch, ["m0", "m2"])
        z = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(q.log_prob(z), mixture_log_prob(z, expected))
    for k, (loc, scale) in enumerate(expected):
        torch.testing.assert_close(q.locs[:, k], loc)
        torch.testing.assert_close(q.scales[:, k], scale)


def test_mopoe_prior_expert_stays_in_the_full_subset():
    """M = 2: {a, b} is every modality, so its product has the prior expert; M = 3: the joint's {a, b, c}."""
    for m in (2, 3):
        model, batch = make_model(RunConfig(model="mopoe_reference"), m), make_batch(m)
        model.scale_floor = 0.0
        experts = [gaussian(*p) for p in encoder_gaussians(model, batch).values()]
        with torch.no_grad():
            q = model.infer(batch, names_of(m))
        loc, scale = product(*experts, prior=True)
        torch.testing.assert_close(q.locs[:, -1], loc)
        torch.testing.assert_close(q.scales[:, -1], scale)


def test_mixture_of_products_places_the_prior_by_the_model_modalities():
    g = torch.Generator().manual_seed(4)
    posteriors = {n: dist.Normal(torch.randn(3, 2, generator=g), torch.rand(3, 2, generator=g) + 0.5).to_event(1)
                  for n in "ab"}
    strict = mixture_of_products(posteriors, modalities=("a", "b", "c"))
    full = mixture_of_products(posteriors)
    experts = [(q.base_dist.loc, q.base_dist.scale) for q in posteriors.values()]
    torch.testing.assert_close(strict.locs[:, 2], product(*experts)[0])
    torch.testing.assert_close(full.scales[:, 2], product(*experts, prior=True)[1])
    with pytest.raises(ValueError, match="posterior 'b' is not one of the model's modalities"):
        mixture_of_products(posteriors, modalities=("a", "c"))


# --- posterior scale floor ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name,reference", [("mmvm", "mmvm-code"), ("poe", "mmvm-code"),
                                                  ("mopoe_reference", "multivae"), ("mvtcae", "multivae")])
def test_reference_posteriors_have_no_scale_floor(model_name, reference):
    batch = make_batch(3)
    for ref, floor in ((reference, 0.0), (None, 1e-6)):
        model = make_model(RunConfig(model=model_name, reference=ref), 3)
        with torch.no_grad():
            q = model.encode(batch)["m0"]
        loc, log_var = encoder_gaussians(model, batch)["m0"]
        assert torch.equal(q.base_dist.scale, torch.exp(0.5 * log_var) + floor)
        assert torch.equal(q.base_dist.loc, loc)


def test_floor_matters_where_the_scale_underflows():
    model = make_model(RunConfig(model="independent", posterior_scale_floor=0.0), 1)
    q = model.posterior_of(torch.zeros(1, 4), torch.full((1, 4), -300.0))
    assert torch.equal(q.base_dist.scale, torch.zeros(1, 4))
    model.scale_floor = 1e-6
    assert torch.equal(model.posterior_of(torch.zeros(1, 4), torch.full((1, 4), -300.0)).base_dist.scale,
                       torch.full((1, 4), 1e-6))


# --- latent probe ---------------------------------------------------------------------------------------------------


def probe_dataset(n: int, seed: int) -> MultimodalDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    data = {name: torch.rand(n, *SHAPE, generator=g) + labels.view(-1, 1, 1, 1) * 0.3 for name in names_of(2)}
    return MultimodalDataset(data, labels=labels)


def test_mmvm_code_latent_probe_runs_ten_thousand_iterations():
    cfg = RunConfig(model="mmvm", reference="mmvm-code")
    assert cfg.setting("latent_max_iter") == 10000 and RunConfig(model="mmvm").setting("latent_max_iter") == 1000
    model = make_model(cfg, 2)
    train_set, test_set = probe_dataset(60, 0), probe_dataset(30, 1)
    got = latent_classification(model, train_set, test_set, num_train=40, max_iter=cfg.setting("latent_max_iter"))
    for name in names_of(2):
        means = {s: encoder_gaussians(model, d.batch(slice(0, n)))[name][0].double().numpy()
                 for s, d, n in (("train", train_set, 40), ("test", test_set, 30))}
        probe = LogisticRegression(max_iter=10000).fit(means["train"], train_set.labels[:40].numpy())
        assert got[name] == pytest.approx(probe.score(means["test"], test_set.labels.numpy()))


# --- MMVAE+ DReG and amsgrad ------------------------------------------------------------------------------------------


def test_mmvaeplus_code_mode_builds_the_official_dreg():
    """The estimator itself is checked against a hand computation of the official formula, gradients included,
    in tests/test_mmvae_plus.py (detach='reference')."""
    cfg = RunConfig(model="mmvae_plus", reference="mmvaeplus-code", estimator="dreg", num_importance_samples=2)
    assert build_elbo(cfg).detach_guide is False  # log q at the live parameters, as the official code
    assert build_elbo(cfg.replace(reference="multivae")).detach_guide is True
    assert build_elbo(cfg.replace(dreg_detach="proper")).detach_guide is True  # an explicit option wins


def test_mmvae_code_mode_trains_with_amsgrad(tmp_path):
    cfg = RunConfig(model="mmvae", reference="mmvae-code", num_views=2, train_limit=16, batch_size=8, epochs=1,
                    latent_dim=2, hidden=[8], num_importance_samples=2)
    train(cfg, tmp_path, progress=False)
    _, state = CheckpointDir(tmp_path / "checkpoints").load_latest("cpu")
    groups = state["optimizer"]["param_groups"]
    assert all(group["amsgrad"] for group in groups)
    # Adam-amsgrad keeps v̂_t = max(v̂_{t−1}, v_t): after two steps it bounds the second moment from above
    for entry in state["optimizer"]["state"].values():
        assert torch.all(entry["max_exp_avg_sq"] >= entry["exp_avg_sq"])


# --- bad input and the table --------------------------------------------------------------------------------------


def test_unknown_reference_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown reference 'mmvm'; choose from \('mmvm-code', 'multivae'"):
        RunConfig(model="mmvm", reference="mmvm")


@pytest.mark.parametrize("model_name,reference", [("mmvae", "mmvm-code"), ("mmvm", "multivae"), ("moe", "mmvaeplus-code")])
def test_reference_that_does_not_train_the_model_lists_its_models(model_name, reference):
    with pytest.raises(ConfigError, match=rf"reference '{reference}' .* does not train model '{model_name}'; its models are"):
        RunConfig(model=model_name, reference=reference)


def test_options_set_for_models_they_do_not_apply_to_are_named():
    with pytest.raises(ConfigError, match=r"beta_squared applies to models \('independent',\), not to 'mmvm'"):
        RunConfig(model="mmvm", beta_squared=True)
    with pytest.raises(ConfigError, match="mixture_blocks applies to models"):
        RunConfig(model="poe", mixture_blocks="remainder_last")
    with pytest.raises(ConfigError, match="mixture_blocks must be one of"):
        RunConfig(model="moe", mixture_blocks="last")
    with pytest.raises(ConfigError, match="posterior_scale_floor must be a finite number >= 0"):
        RunConfig(model="mmvm", posterior_scale_floor=-1.0)
    with pytest.raises(ConfigError, match="'beta' is not a reference-difference option"):
        RunConfig().setting("beta")


def test_reference_settings_list_what_a_mode_changes_for_the_model():
    assert RunConfig(model="moe", reference="mmvm-code").reference_settings() == {
        "mixture_blocks": "remainder_last", "posterior_scale_floor": 0.0, "latent_max_iter": 10000,
        "test_drop_last": True, "coherence_classifier": "resnet", "latent_probe_features": "training_epoch",
    }
    assert RunConfig(model="independent", reference="mmvm-code", latent_max_iter=1000).reference_settings() == {
        "beta_squared": True, "posterior_scale_floor": 0.0, "test_drop_last": True, "coherence_classifier": "resnet",
        "latent_probe_features": "training_epoch",
    }
    assert RunConfig(model="mmvae_plus", reference="mmvaeplus-code").reference_settings() == {
        "dreg_detach": "reference", "amsgrad": True,
    }
    assert RunConfig(model="mmvae_plus", reference="multivae").reference_settings() == {}


def test_reference_modes_off_keep_every_default():
    for model_name in references.EVERY_MODEL:
        cfg = RunConfig(model=model_name)
        for difference in references.DIFFERENCES:
            assert cfg.setting(difference.option) == difference.default


def test_every_option_is_a_row_of_the_table():
    table = DOC.read_text()
    for difference in references.DIFFERENCES:
        assert f"`{difference.option}" in table, difference.option
    for name in references.REFERENCES:
        assert f"`{name}`" in table, name


# --- JNF subsets: MultiVae's fixed-step HMC -------------------------------------------------------------------------


def test_multivae_jnf_subset_sampler_is_fixed_step_hmc_from_a_base_gaussian():
    cfg = RunConfig(model="jnf", reference="multivae", epochs=2, latent_dim=2, hidden=[8], flow_hidden=8)
    assert cfg.setting("jnf_subset_sampler") == "reference"
    model, batch = build_model(cfg, {n: SHAPE for n in names_of(3)}), make_batch(3, 4)
    model.subset_sampler = ReferenceSubsetHMC(mcmc_steps=3, n_lf=4, eps=0.05)
    torch.manual_seed(5)
    got = model.infer(batch, ["m0", "m2"]).mean

    with torch.no_grad():
        posteriors = model.encode(batch.select(["m0", "m2"]))
    bases = [posteriors[m].base.base_dist for m in ("m0", "m2")]

    def log_target(z):  # Σ_{m∈S} log q_m(z | x_m) − log N(z; 0, I): the prior divided once
        prior = dist.Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
        return sum(q.log_prob(z) for q in posteriors.values()) - prior

    def value_and_grad(z):
        z = z.detach().requires_grad_(True)
        value = log_target(z)
        return value.detach(), torch.autograd.grad(value.sum(), z)[0]

    torch.manual_seed(5)
    choice = torch.randint(2, (4,))
    noise = torch.randn(2, 4, 2)
    z = torch.stack([bases[k].loc[b] + bases[k].scale[b] * noise[k, b] for b, k in enumerate(choice.tolist())])
    for _ in range(3):
        lp, grad = value_and_grad(z)
        rho = torch.randn(z.shape)
        h0 = -lp + 0.5 * (rho**2).sum(-1)
        proposal = z
        for _ in range(4):
            rho = rho + 0.025 * grad
            proposal = proposal + 0.05 * rho
            lp, grad = value_and_grad(proposal)
            rho = rho + 0.025 * grad
        h = -lp + 0.5 * (rho**2).sum(-1)
        accept = torch.rand(h.shape) < torch.exp(h0 - h)
        z = torch.where(accept.unsqueeze(-1), proposal, z)
    torch.testing.assert_close(got, z)
    assert isinstance(build_model(cfg.replace(reference=None), {n: SHAPE for n in names_of(3)}).subset_sampler,
                      SubsetHMC)


# --- evaluation on whole batches of 64 ------------------------------------------------------------------------------


@pytest.mark.parametrize("size,kept", [(100, 64), (10000, 9984), (128, 128)])
def test_mmvm_code_evaluates_on_whole_batches_of_64(size, kept):
    test_set = probe_dataset(size, 2)
    cut = evaluation_test_set(RunConfig(model="mmvm", reference="mmvm-code"), test_set)
    # the reference's loader: batches of 64 in order, the last incomplete one dropped
    reference = [i for start in range(0, size - 63, 64) for i in range(start, start + 64)]
    assert len(cut) == kept == len(reference)
    assert torch.equal(cut.labels, test_set.labels[reference])
    assert len(evaluation_test_set(RunConfig(model="mmvm"), test_set)) == size
    with pytest.raises(ConfigError, match="test_drop_last leaves no test sample of 10"):
        evaluation_test_set(RunConfig(model="mmvm", test_drop_last=True), probe_dataset(10, 0))


def test_a_run_in_mmvm_code_mode_trains_evaluates_and_records_its_mode(tmp_path):
    cfg = RunConfig(model="mopoe", reference="mmvm-code", dataset="digits", num_views=3, latent_dim=4, hidden=[16],
                    epochs=1, batch_size=42, train_limit=126, test_limit=100, classifier_epochs=1,
                    classifier_train_limit=64, eval_num_train=100)
    trained, _, train_set, test_set = train(cfg, tmp_path, progress=False)
    results = evaluate_run(trained, train_set, test_set, cfg, tmp_path)
    recorded = json.loads((tmp_path / "evaluation.json").read_text())
    assert recorded["config"]["reference"] == "mmvm-code"
    assert recorded["reference_settings"] == results["reference_settings"] == cfg.reference_settings()
    assert trained.scale_floor == 0.0
