"""Hand-written PyTorch references of pyromm's training objectives, for ``benchmarks/step_time.py``.

Each ``<model>(nets, xs, ...)`` returns the loss of the pyromm objective of that model (the batch mean of the
per-sample negative objective, summed over modalities and data dimensions) from the same encoder/decoder
modules, in plain tensors: Gaussian posteriors as (μ, σ) with σ = exp(lv/2) + 1e-6, Laplace posteriors as
(μ, s) with s = softmax(ℓ)·D + 1e-6 (pyromm's parameterisations and scale floor), the Laplace(0.75)
likelihood and every KL, PoE, mixture and importance weight written out (JNF's flows are the model's own nflows
MAF modules, called for u = f(z) and log |det|). Random numbers are drawn in pyromm's order and shapes, so under
the same seed both sides use the same noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, combinations

import torch
from torch import Tensor, nn

LIKELIHOOD_SCALE = 0.75
MIN_SCALE = 1e-6
LOG_2PI = math.log(2 * math.pi)


@dataclass
class Nets:
    """The modules of one pyromm model, in modality order (the references use these very instances)."""

    encoders: list[nn.Module]
    decoders: list[nn.Module]
    joint_heads: list[nn.Module]
    joint: nn.Module | None
    prior_logits: Tensor | None
    private_prior_logits: list[Tensor]
    shared_dim: int
    flows: list[nn.Module]

    @classmethod
    def of(cls, model: nn.Module) -> "Nets":
        names = model.modality_names
        joint = getattr(model, "joint_encoder", None)
        private = getattr(model, "private_prior_logits", None)
        return cls(
            encoders=[model.encoders[n] for n in names],
            decoders=[model.decoders[n] for n in names],
            joint_heads=[] if joint is None else [joint.heads[n].encoder for n in names],
            joint=joint,
            prior_logits=getattr(model, "prior_logits", None),
            private_prior_logits=[] if private is None else [private[n] for n in names],
            shared_dim=getattr(model, "shared_dim", model.latent_dim),
            flows=[model.flows[n] for n in names] if hasattr(model, "flows") else [],
        )


# --- densities, divergences, aggregates ---------------------------------------------------------------------


def laplace_nll(x: Tensor, loc: Tensor) -> Tensor:
    """−log Laplace(x; loc, b) summed over the image dims (C, H, W): |x − loc|/b + log 2b, b = 0.75."""
    return ((x - loc).abs() / LIKELIHOOD_SCALE + math.log(2 * LIKELIHOOD_SCALE)).sum((-3, -2, -1))


def normal_posterior(encoder: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(μ, σ) with σ = exp(lv/2) + 1e-6 from the encoder's (μ, lv)."""
    mu, log_var = encoder(x)
    return mu, torch.exp(0.5 * log_var) + MIN_SCALE


def kl_normal(mu0: Tensor, std0: Tensor, mu1: Tensor, std1: Tensor) -> Tensor:
    """KL(N(μ0, σ0²) ‖ N(μ1, σ1²)) = Σ_d [r − 1 − log r + (μ0 − μ1)²/σ1²] / 2, r = σ0²/σ1²."""
    ratio = (std0 / std1).pow(2)
    return 0.5 * (ratio - 1 - ratio.log() + ((mu0 - mu1) / std1).pow(2)).sum(-1)


def kl_standard(mu: Tensor, std: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = Σ_d [σ² + μ² − 1 − log σ²] / 2."""
    var = std.pow(2)
    return 0.5 * (var + mu.pow(2) - 1 - var.log()).sum(-1)


def log_normal(z: Tensor, mu: Tensor, std: Tensor) -> Tensor:
    """log N(z; μ, σ²) = Σ_d −[(z − μ)²/σ² + log 2π]/2 − log σ."""
    return (-0.5 * (((z - mu) / std).pow(2) + LOG_2PI) - std.log()).sum(-1)


def product(mus: list[Tensor], stds: list[Tensor], prior_expert: bool = False) -> tuple[Tensor, Tensor]:
    """PoE: 1/σ² = Σ_m 1/σ_m² (+ 1 with the N(0, I) expert), μ = σ² Σ_m μ_m/σ_m²."""
    precisions = [s.pow(-2) for s in stds]
    precision = sum(precisions) + (1.0 if prior_expert else 0.0)
    mu = sum(m * p for m, p in zip(mus, precisions)) / precision
    return mu, precision.rsqrt()


def subsets(m: int) -> list[tuple[int, ...]]:
    """The 2^M − 1 non-empty subsets of range(M): singletons, pairs, …, all (itertools order)."""
    return [s for r in range(1, m + 1) for s in combinations(range(m), r)]


@lru_cache
def blocks(batch_size: int, k: int) -> list[slice]:
    """Stratified selection of k uniform components: position b uses component ⌊k(b + ½)/B⌋, so component j
    covers one block of consecutive rows (B/k of them when k divides B)."""
    index = [k * (2 * b + 1) // (2 * batch_size) for b in range(batch_size)]
    ends = list(accumulate(index.count(j) for j in range(k)))
    return [slice(end - index.count(j), end) for j, end in enumerate(ends)]


def laplace_scale(second: Tensor) -> Tensor:
    """The Laplace posterior scale s = softmax(ℓ)·D + 1e-6."""
    return torch.softmax(second, -1) * second.shape[-1] + MIN_SCALE


def laplace_rsample(loc: Tensor, scale: Tensor, shape: tuple[int, ...]) -> Tensor:
    """z = μ − s·sign(u)·log(1 − |u|), u ~ U(ε − 1, 1) of ``shape`` (torch's Laplace.rsample)."""
    u = loc.new_empty(shape).uniform_(torch.finfo(loc.dtype).eps - 1, 1)
    return loc - scale * u.sign() * torch.log1p(-u.abs())


def log_laplace(z: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """log Laplace(z; μ, s) = Σ_d −log 2s − |z − μ|/s."""
    scale = torch.as_tensor(scale, dtype=z.dtype, device=z.device)
    return (-torch.log(2 * scale) - (z - loc).abs() / scale).sum(-1)


# --- one latent per modality ---------------------------------------------------------------------------------


def independent(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """Σ_m mean_b [nll(x_m | z_m) + β KL(q_m ‖ N(0, I))], z_m = μ_m + σ_m ε_m."""
    loss = 0.0
    for enc, dec, x in zip(nets.encoders, nets.decoders, xs):
        mu, std = normal_posterior(enc, x)
        z = mu + std * torch.randn_like(mu)
        loss = loss + laplace_nll(x, dec(z)).mean() + beta * kl_standard(mu, std).mean()
    return loss


def mmvm(nets: Nets, xs: list[Tensor], beta: float, rate: str) -> Tensor:
    """MMVM (α = 0), h = 1/M Σ_k q_k: Σ_m mean_b [nll(x_m | z_m) + β R_m], z_m = μ_m + σ_m ε_m, with
    R_m = 1/M Σ_k KL(q_m ‖ q_k) ('jensen') or log q_m(z_m) − [logsumexp_k log q_k(z_m) − log M] ('mc')."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m = len(stats)
    loss = 0.0
    for (mu, std), dec, x in zip(stats, nets.decoders, xs):
        z = mu + std * torch.randn_like(mu)
        if rate == "jensen":
            r = sum(kl_normal(mu, std, mu_k, std_k) for mu_k, std_k in stats) / m
        else:
            log_h = torch.logsumexp(torch.stack([log_normal(z, mu_k, std_k) for mu_k, std_k in stats], -1), -1)
            r = log_normal(z, mu, std) - (log_h - math.log(m))
        loss = loss + laplace_nll(x, dec(z)).mean() + beta * r.mean()
    return loss


# --- one shared latent ---------------------------------------------------------------------------------------


def shared_reconstruction(nets: Nets, xs: list[Tensor], mu: Tensor, std: Tensor, names: list[int]) -> Tensor:
    """Σ_{m∈names} mean_b nll(x_m | z), z = μ + σ ε."""
    z = mu + std * torch.randn_like(mu)
    return sum(laplace_nll(xs[m], nets.decoders[m](z)).mean() for m in names)


def avg(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """AVG (MMVM baseline): q = N(1/M Σ μ_m, 1/M Σ σ_m²); Σ_m mean nll(x_m | z) + β M mean KL(q ‖ N(0, I))."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m = len(stats)
    mu = sum(s[0] for s in stats) / m
    std = (sum(s[1].pow(2) for s in stats) / m).sqrt()
    rec = shared_reconstruction(nets, xs, mu, std, list(range(m)))
    return rec + beta * m * kl_standard(mu, std).mean()


def poe(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """PoE (MMVM baseline, no prior expert): Σ_m mean nll(x_m | z) + β M mean KL(q ‖ N(0, I))."""
    mus, stds = zip(*(normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)))
    mu, std = product(list(mus), list(stds))
    rec = shared_reconstruction(nets, xs, mu, std, list(range(len(mus))))
    return rec + beta * len(mus) * kl_standard(mu, std).mean()


def select_blocks(components: list[tuple[Tensor, Tensor]], batch_size: int) -> tuple[Tensor, Tensor]:
    """(μ, σ) of the component each position uses: the rows of block j (:func:`blocks`) from component j."""
    parts = [(mu[rows], std[rows]) for (mu, std), rows in zip(components, blocks(batch_size, len(components)))]
    return torch.cat([mu for mu, _ in parts]), torch.cat([std for _, std in parts])


def moe(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """MoE (MMVM baseline): block m of the batch draws from q_m, z = μ_sel + σ_sel ε;
    Σ_m mean nll(x_m | z) + β M mean KL(q_sel ‖ N(0, I)) (the selected component's KL)."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    mu, std = select_blocks(stats, xs[0].shape[0])
    rec = shared_reconstruction(nets, xs, mu, std, list(range(len(stats))))
    return rec + beta * len(stats) * kl_standard(mu, std).mean()


def mopoe(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """MoPoE (MMVM baseline, no prior expert): block j of the batch (2^M − 1 blocks) draws from PoE(S_j) of
    its own rows; Σ_m mean nll(x_m | z) + β M mean KL(q_sel ‖ N(0, I))."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m, family = len(stats), subsets(len(stats))
    parts = [
        product([stats[i][0][rows] for i in s], [stats[i][1][rows] for i in s])
        for s, rows in zip(family, blocks(xs[0].shape[0], len(family)))
    ]
    mu, std = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    rec = shared_reconstruction(nets, xs, mu, std, list(range(m)))
    return rec + beta * m * kl_standard(mu, std).mean()


def mopoe_reference(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """MoPoE (original / MultiVae): q = 1/K Σ_j PoE(S_j), N(0, I) expert in the full subset only; stratified z;
    Σ_m mean nll(x_m | z) + β mean 1/K Σ_j KL(PoE(S_j) ‖ N(0, I)) (the subset-averaged KL)."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m, family = len(stats), subsets(len(stats))
    components = [product([stats[i][0] for i in s], [stats[i][1] for i in s], len(s) == m) for s in family]
    mu, std = select_blocks(components, xs[0].shape[0])
    rec = shared_reconstruction(nets, xs, mu, std, list(range(m)))
    return rec + beta * (sum(kl_standard(*c) for c in components) / len(components)).mean()


def mvae(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """MVAE, subsampled with k = 0: Σ_S [Σ_{m∈S} mean nll(x_m | z_S) + β mean KL(q_S ‖ N(0, I))] over
    S = all, {1}, …, {M} in that order; q_S = PoE of S with the N(0, I) expert, z_S = μ_S + σ_S ε_S."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m = len(stats)
    loss = 0.0
    for s in [list(range(m))] + [[i] for i in range(m)]:
        mu, std = product([stats[i][0] for i in s], [stats[i][1] for i in s], prior_expert=True)
        rec = shared_reconstruction(nets, xs, mu, std, s)
        loss = loss + rec + beta * kl_standard(mu, std).mean()
    return loss


def mvtcae(nets: Nets, xs: list[Tensor], beta: float, alpha: float) -> Tensor:
    """MVTCAE, q = PoE (no prior expert): (M − α)/M Σ_m mean nll(x_m | z)
    + β mean [(1 − α) KL(q ‖ N(0, I)) + α/M Σ_m KL(q ‖ q_m)]."""
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    m = len(stats)
    mu, std = product([s[0] for s in stats], [s[1] for s in stats])
    z = mu + std * torch.randn_like(mu)
    rec = sum(((m - alpha) / m * laplace_nll(x, dec(z))).mean() for dec, x in zip(nets.decoders, xs))
    rate = (1 - alpha) * kl_standard(mu, std) + alpha / m * sum(kl_normal(mu, std, *s) for s in stats)
    return rec + beta * rate.mean()


def joint_posterior(nets: Nets, xs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(μ, σ) of q(z | X) = N(μ, exp(lv)), [μ, lv] = heads(h), h = MLP([enc_1(x_1); …; enc_M(x_M)]) (no floor)."""
    h = nets.joint.body(torch.cat([torch.cat(head(x), -1) for head, x in zip(nets.joint_heads, xs)], -1))
    return nets.joint.loc(h), torch.exp(0.5 * nets.joint.log_var(h))


def jmvae(nets: Nets, xs: list[Tensor], beta: float, alpha: float) -> Tensor:
    """JMVAE-KL with the joint posterior q(z | X) of :func:`joint_posterior`:
    Σ_m mean nll(x_m | z) + mean [β KL(q ‖ N(0, I)) + α Σ_m KL(q ‖ q_m)]."""
    mu, std = joint_posterior(nets, xs)
    stats = [normal_posterior(enc, x) for enc, x in zip(nets.encoders, xs)]
    rec = shared_reconstruction(nets, xs, mu, std, list(range(len(xs))))
    return rec + (beta * kl_standard(mu, std) + alpha * sum(kl_normal(mu, std, *s) for s in stats)).mean()


def jnf_flows(nets: Nets, xs: list[Tensor]) -> Tensor:
    """JNF stage 2 (joint encoder frozen): z ~ q(z | X) of :func:`joint_posterior`, drawn without gradient;
    loss = Σ_m mean_b −log q_m(z | x_m), log q_m(z | x_m) = log N(f_m(z); μ_m, σ_m²) + log |det ∂f_m(z)/∂z|
    through the unconditional nflows MAF f_m (z ↦ u) and the encoder Gaussian (μ_m, σ_m) of x_m."""
    with torch.no_grad():
        z = torch.normal(*joint_posterior(nets, xs))
    loss = 0.0
    for enc, flow, x in zip(nets.encoders, nets.flows, xs):
        u, log_det = flow(z)
        loss = loss - (log_normal(u, *normal_posterior(enc, x)) + log_det).mean()
    return loss


# --- importance-weighted mixtures of Laplace experts ---------------------------------------------------------


def mmvae(nets: Nets, xs: list[Tensor], num_samples: int, estimator: str) -> Tensor:
    """MMVAE, looser bound: z_{r,k} ~ q_r (k = 1..K, drawn r by r), every z decoded by every decoder (one call
    per decoder and source r, on its K·B draws, as pyromm and the references do), and
    lw_{r,k} = log p(z) − Σ_d nll(x_d | z) − [logsumexp_m log q_m(z) − log M], p = Laplace(0, softmax(ℓ_p)·D).
    'iwae': loss = −mean_b 1/M Σ_r [logsumexp_k lw_{r,k} − log K]. 'dreg': the q_m in lw take detached
    parameters and loss = −mean_b 1/M Σ_r Σ_k w̃_{r,k} lw_{r,k}, w̃ = softmax_k(lw) (no grad), with a hook
    multiplying the gradient reaching z_{r,k} by w̃_{r,k}."""
    stats = [(loc, laplace_scale(second)) for loc, second in (enc(x) for enc, x in zip(nets.encoders, xs))]
    m, (b, d) = len(stats), stats[0][0].shape
    z = torch.stack([laplace_rsample(loc, scale, (num_samples, b, d)) for loc, scale in stats], 1)  # (K, M, B, D)
    dreg = estimator == "dreg"
    in_log_q = [(loc.detach(), scale.detach()) for loc, scale in stats] if dreg else stats
    log_q = torch.stack([log_laplace(z, loc, scale) for loc, scale in in_log_q], -1)
    log_mixture = torch.logsumexp(log_q, -1) - math.log(m)
    log_prior = log_laplace(z, 0.0, torch.softmax(nets.prior_logits, -1) * d)
    nll = []
    for z_r in z.unbind(1):
        flat = z_r.reshape(-1, d)
        nll.append(sum(laplace_nll(x, dec(flat).view(num_samples, *x.shape)) for dec, x in zip(nets.decoders, xs)))
    lw = log_prior - torch.stack(nll, 1) - log_mixture  # (K, M, B)
    if not dreg:
        return -(torch.logsumexp(lw, 0) - math.log(num_samples)).mean(0).mean()
    weights = torch.softmax(lw.detach(), 0)
    z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    return -(weights * lw).sum(0).mean(0).mean()


def mmvae_plus(nets: Nets, xs: list[Tensor], beta: float) -> Tensor:
    """MMVAE+, ELBO (K = 1): per modality r, z_r ~ q_r(z) then w_r ~ q_r(w) (encoder outputs split [z | w]),
    then ŵ_{r→d} ~ r_d = Laplace(0, softmax(ℓ_d)·D_w) for each r and d ≠ r;
    lw_r = −Σ_d nll(x_d | u_{r→d}) + β [log Laplace(u_r; 0, 1) − log q(z_r) − log q_r(w_r)],
    q(z) = 1/M Σ_m q_m(z) (a logsumexp), u_r = [w_r, z_r], u_{r→d} = [ŵ_{r→d}, z_r] (d ≠ r);
    loss = −mean_b 1/M Σ_r lw_r."""
    s = nets.shared_dim
    outputs = [enc(x) for enc, x in zip(nets.encoders, xs)]
    shared = [(loc[:, :s], laplace_scale(second[:, :s])) for loc, second in outputs]
    private = [(loc[:, s:], laplace_scale(second[:, s:])) for loc, second in outputs]
    draws = []
    for (loc_z, scale_z), (loc_w, scale_w) in zip(shared, private):
        z = laplace_rsample(loc_z, scale_z, tuple(loc_z.shape))
        draws.append((z, laplace_rsample(loc_w, scale_w, tuple(loc_w.shape))))
    m, b, d_w = len(xs), xs[0].shape[0], private[0][0].shape[-1]
    cross = {}
    for r in range(m):
        for d in range(m):
            if d != r:
                scale = torch.softmax(nets.private_prior_logits[d], -1) * d_w
                cross[r, d] = laplace_rsample(torch.zeros_like(scale), scale, (b, d_w))
    log_px = 0.0
    for d, (dec, x) in enumerate(zip(nets.decoders, xs)):
        inputs = [torch.cat([w, z] if r == d else [cross[r, d], z], -1) for r, (z, w) in enumerate(draws)]
        log_px = log_px - laplace_nll(x, dec(torch.cat(inputs)).reshape(m, *x.shape))
    lw = []
    for r, (z, w) in enumerate(draws):
        log_mixture = torch.logsumexp(torch.stack([log_laplace(z, *q) for q in shared], -1), -1) - math.log(m)
        log_pu = log_laplace(torch.cat([w, z], -1), 0.0, 1.0)
        lw.append(log_px[r] + beta * (log_pu - log_mixture - log_laplace(w, *private[r])))
    return -torch.stack(lw).mean(0).mean()
