"""Time a pyromm training step against a hand-written PyTorch step of the same math and networks.

Models: independent VAEs (analytic KL), MMVM with the Jensen rate, MMVM with the MC rate. Both sides
use the same encoder/decoder modules, batch, Laplace(0.75) likelihood and Adam; timings interleave the
two sides and report the median step time and the ratio pyromm / hand-written.

    python benchmarks/step_time.py --network conv --batch-size 128 --steps 30
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import pyro
import torch

from pyromm.data import MultimodalBatch
from pyromm.infer import MultimodalELBO
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, independent_vaes, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder, PolyMNISTConvDecoder, PolyMNISTConvEncoder, PolyMNISTResNetDecoder, PolyMNISTResNetEncoder

NETS = {
    "mlp": (lambda d: MLPEncoder((3, 28, 28), d), lambda d: MLPDecoder(d, (3, 28, 28))),
    "conv": (PolyMNISTConvEncoder, PolyMNISTConvDecoder),
    "resnet": (PolyMNISTResNetEncoder, PolyMNISTResNetDecoder),
}
SCALE = 0.75


def laplace_nll(x, loc):
    """−log Laplace(x; loc, b) summed over data dims: |x − loc|/b + log 2b."""
    return ((x - loc).abs() / SCALE + math.log(2 * SCALE)).flatten(1).sum(-1)


def kl_diag(mu0, lv0, mu1, lv1):
    """KL(N(mu0, e^lv0) ‖ N(mu1, e^lv1)) summed over the last dim."""
    return 0.5 * (lv1 - lv0 + (lv0.exp() + (mu0 - mu1).pow(2)) / lv1.exp() - 1).sum(-1)


def log_normal(z, mu, lv):
    return (-0.5 * (lv + math.log(2 * math.pi) + (z - mu).pow(2) / lv.exp())).sum(-1)


def handwritten_loss(encoders, decoders, xs, kind, beta):
    """The same objectives as pyromm's MultimodalELBO, written directly in PyTorch."""
    stats = [enc(x) for enc, x in zip(encoders, xs)]
    zs = [mu + (0.5 * lv).exp() * torch.randn_like(mu) for mu, lv in stats]
    rec = sum(laplace_nll(x, dec(z)) for dec, x, z in zip(decoders, xs, zs))
    if kind == "independent":
        rate = sum(kl_diag(mu, lv, torch.zeros_like(mu), torch.zeros_like(lv)) for mu, lv in stats)
    elif kind == "mmvm-jensen":
        m = len(stats)
        rate = sum(kl_diag(mu0, lv0, mu1, lv1) for mu0, lv0 in stats for mu1, lv1 in stats) / m
    else:
        mus = torch.stack([mu for mu, _ in stats], 1)
        lvs = torch.stack([lv for _, lv in stats], 1)
        rate = 0.0
        for (mu, lv), z in zip(stats, zs):
            log_h = torch.logsumexp(log_normal(z.unsqueeze(1), mus, lvs), 1) - math.log(len(stats))
            rate = rate + log_normal(z, mu, lv) - log_h
    return (rec + beta * rate).mean()


def build(kind, network, latent_dim, views):
    enc, dec = NETS[network]
    mods = [Modality(f"m{i}", enc(latent_dim), dec(latent_dim), Laplace(3, SCALE), (3, 28, 28)) for i in range(views)]
    if kind == "independent":
        return independent_vaes(mods, latent_dim), MultimodalELBO("analytic")
    return mmvm_vae(mods, latent_dim, alpha=0.0), MultimodalELBO(kind.split("-")[1])


def time_steps(step, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", choices=sorted(NETS), default="conv")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    pyro.enable_validation(False)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(args.batch_size, 3, 28, 28, generator=g).to(device) for _ in range(args.views)]
    batch = MultimodalBatch({f"m{i}": x for i, x in enumerate(xs)})
    hyper = {"beta": 1.0}
    rows = []
    for kind in ("independent", "mmvm-jensen", "mmvm-mc"):
        torch.manual_seed(0)
        model, objective = build(kind, args.network, args.latent_dim, args.views)
        model.to(device)
        encoders = [model.encoders[f"m{i}"] for i in range(args.views)]
        decoders = [model.decoders[f"m{i}"] for i in range(args.views)]
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def pyromm_step():
            opt.zero_grad(set_to_none=True)
            objective(model, batch, hyper).loss.backward()
            opt.step()

        def torch_step():
            opt.zero_grad(set_to_none=True)
            handwritten_loss(encoders, decoders, xs, kind, 1.0).backward()
            opt.step()

        torch.manual_seed(1)
        a = objective(model, batch, hyper).loss.item()
        torch.manual_seed(1)
        b = handwritten_loss(encoders, decoders, xs, kind, 1.0).item()
        if not math.isclose(a, b, rel_tol=1e-4):
            raise AssertionError(f"{kind}: pyromm loss {a} != hand-written loss {b}")
        time_steps(pyromm_step, 3)
        time_steps(torch_step, 3)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours += time_steps(pyromm_step, args.steps)
            theirs += time_steps(torch_step, args.steps)
        t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
        rows.append({"model": kind, "pyromm_ms": 1e3 * t_ours, "torch_ms": 1e3 * t_theirs, "ratio": t_ours / t_theirs})
    env = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "network": args.network,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "views": args.views,
    }
    print(json.dumps(env))
    print(f"{'model':<14}{'pyromm ms':>11}{'torch ms':>11}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<14}{r['pyromm_ms']:>11.2f}{r['torch_ms']:>11.2f}{r['ratio']:>8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
