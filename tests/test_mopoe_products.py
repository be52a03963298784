"""MoPoE builds only each sample's chosen subset product for a draw, and gives the numbers of the
per-subset loop it replaces (the reference below: every subset's product of experts, stacked)."""
import math

import pyro.distributions as dist
import pytest
import torch

from pyromm.aggregation import SubsetProductMixture, mixture_of_products, subsets
from pyromm.infer.rates import jensen_kl, selected_component_kl
from pyromm.infer.iwae import detach_parameters

B, D = 9, 3
# float32 rounding: the masked softmax/logsumexp over all E experts may round the last bit differently
CLOSE = dict(rtol=1e-6, atol=1e-6)


def reference(posteriors, mask, prior_expert, family=None):
    """(locs, scales, log_weights) of MoPoE as one PoE per subset, in a loop over the subsets."""
    names = list(posteriors)
    locs = torch.stack([q.base_dist.loc for q in posteriors.values()], -2)
    scales = torch.stack([q.base_dist.scale for q in posteriors.values()], -2)
    observed = torch.stack([mask[n] if mask else torch.ones(B, dtype=torch.bool) for n in names], -1)
    locs, scales = torch.where(observed[..., None], locs, 0.0), torch.where(observed[..., None], scales, 1.0)
    comp_locs, comp_scales, present = [], [], []
    for subset in family or subsets(names):
        index = [names.index(n) for n in subset]
        members = observed[:, index]
        any_member = members.any(-1)
        members = members | ~any_member[:, None]
        log_precision = torch.where(members[..., None], -2.0 * scales[:, index].log(), -math.inf)
        sub_locs = locs[:, index]
        if prior_expert == "all" or (prior_expert == "full" and len(subset) == len(names)):
            log_precision = torch.cat([log_precision, torch.zeros_like(log_precision[:, :1])], -2)
            sub_locs = torch.cat([sub_locs, torch.zeros_like(sub_locs[:, :1])], -2)
        comp_locs.append((torch.softmax(log_precision, -2) * sub_locs).sum(-2))
        comp_scales.append(torch.exp(-0.5 * torch.logsumexp(log_precision, -2)))
        present.append(any_member)
    present = torch.stack(present, -1).float()
    return torch.stack(comp_locs, -2), torch.stack(comp_scales, -2), present.log() - present.sum(-1, keepdim=True).log()


def experts(num, seed, masked):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(num, B, D, generator=g, requires_grad=True)
    raw_scale = (torch.rand(num, B, D, generator=g) * 2 + 0.05).requires_grad_()
    posteriors = {f"m{i}": dist.Normal(loc[i], raw_scale[i]).to_event(1) for i in range(num)}
    mask = None
    if masked:
        observed = torch.rand(B, num, generator=g) < 0.6
        observed[:, 0] |= ~observed.any(-1)
        mask = {f"m{i}": observed[:, i] for i in range(num)}
    return posteriors, mask, (loc, raw_scale)


def standard_normal():
    return dist.Normal(torch.zeros(B, D), torch.ones(B, D)).to_event(1)


@pytest.mark.parametrize("num", [2, 3, 4])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("prior_expert", ["full", "none", "all"])
@pytest.mark.parametrize("stratified", [True, False])
def test_matches_the_per_subset_loop(num, masked, prior_expert, stratified):
    posteriors, mask, _ = experts(num, 10 * num + masked, masked)
    q = mixture_of_products(posteriors, mask, prior_expert=prior_expert, stratified=stratified)
    locs, scales, log_weights = reference(posteriors, mask, prior_expert)
    torch.testing.assert_close(q.log_weights, log_weights, rtol=0, atol=0)
    torch.testing.assert_close(q.locs, locs, **CLOSE)
    torch.testing.assert_close(q.scales, scales, **CLOSE)
    index = q.component_index()
    loc, scale = q.component(index)
    gather = index[:, None, None].expand(B, 1, D)
    torch.testing.assert_close(loc, locs.gather(-2, gather).squeeze(-2), **CLOSE)
    torch.testing.assert_close(scale, scales.gather(-2, gather).squeeze(-2), **CLOSE)


def test_custom_family_matches_the_loop():
    family = [("m0",), ("m2", "m1"), ("m0", "m1", "m2")]
    posteriors, _, _ = experts(3, 5, False)
    q = mixture_of_products(posteriors, family=family)
    locs, scales, _ = reference(posteriors, None, "full", family)
    torch.testing.assert_close(q.locs, locs, **CLOSE)
    torch.testing.assert_close(q.scales, scales, **CLOSE)


@pytest.mark.parametrize("masked", [False, True])
def test_a_draw_and_its_selected_kl_build_only_the_chosen_products(masked):
    """Same z and KL as gathering from all products, with the products never built; gradients agree too."""
    posteriors, mask, leaves = experts(4, 3, masked)
    q = mixture_of_products(posteriors, mask, prior_expert="none")
    torch.manual_seed(0)
    z = q.rsample()
    kl = selected_component_kl(q, standard_normal())
    assert isinstance(q, SubsetProductMixture) and "_locs" not in vars(q)
    grads = torch.autograd.grad((z.sum() + kl.sum()), leaves)
    locs, scales, _ = reference(posteriors, mask, "none")
    index = q.component_index()
    gather = index[:, None, None].expand(B, 1, D)
    loc, scale = locs.gather(-2, gather).squeeze(-2), scales.gather(-2, gather).squeeze(-2)
    torch.manual_seed(0)
    z_ref = loc + scale * torch.randn(B, D)
    kl_ref = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1), standard_normal())
    torch.testing.assert_close(z, z_ref, **CLOSE)
    torch.testing.assert_close(kl, kl_ref, **CLOSE)
    for got, expected in zip(grads, torch.autograd.grad((z_ref.sum() + kl_ref.sum()), leaves)):
        torch.testing.assert_close(got, expected, **CLOSE)


def test_density_and_subset_averaged_kl_build_every_product_once():
    posteriors, mask, _ = experts(3, 4, True)
    q = mixture_of_products(posteriors, mask)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(logits=q.log_weights), dist.Normal(*reference(posteriors, mask, "full")[:2]).to_event(1)
    )
    z = torch.randn(2, B, D)
    torch.testing.assert_close(q.log_prob(z), mixture.log_prob(z), **CLOSE)
    assert q.locs is q.locs
    weights = q.log_weights.exp()
    kl = torch.distributions.kl_divergence(dist.Normal(q.locs, q.scales).to_event(1), dist.Normal(0.0, 1.0).expand((B, 7, D)).to_event(1))
    torch.testing.assert_close(jensen_kl(q, standard_normal()), (weights * kl).sum(-1), **CLOSE)


def test_products_built_under_no_grad_keep_their_gradient_and_detach_cleanly():
    posteriors, mask, (loc, _) = experts(3, 6, True)
    q = mixture_of_products(posteriors, mask)
    with torch.no_grad():
        q.mean
    assert q.locs.requires_grad
    (grad,) = torch.autograd.grad(q.locs.sum(), loc)
    assert grad.abs().sum() > 0
    detached = detach_parameters(q)
    assert not detached.locs.requires_grad and not detached.log_prob(torch.zeros(B, D)).requires_grad
