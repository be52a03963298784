"""MultiVae's incomplete-data case study on PolyMNIST: each non-first view kept with probability η.

Every model trains on all samples (its masked objective) and, as the comparison, on the complete samples
only; joint-encoder models (JMVAE) can only do the latter. The test split stays complete.

    python experiments/incomplete_polymnist.py --quick --workers 2 --threads 1   # 2-core CPU, ~18 min
    python experiments/incomplete_polymnist.py --paper --device cuda

--paper trains MultiVae's models in its reference mode (reference="multivae") and MMVM in the MMVM code's
(reference="mmvm-code"); see docs/reference_differences.md.
"""
from __future__ import annotations

from pyromm.sweep import (
    describe_references,
    experiment_config,
    experiment_executor,
    experiment_parser,
    paper_references,
    run_grid,
)

# --quick: the CPU setting of polymnist_table3.py (MLP 512-512, Normal(σ = 0.25), 2 epochs over the kept samples).
QUICK = dict(network="mlp", hidden=[512, 512], latent_dim=32, likelihood="normal", likelihood_scale=0.25, epochs=2,
             batch_size=128, lr=1e-3, test_limit=1000, classifier_epochs=3, eval_num_train=10000, num_views=5)
# One coherence oracle for every model of the table: pyromm's CNN, also for MMVM, whose mmvm-code mode would give it
# the MMVM code's ResNet classifiers (docs/reference_differences.md, row 11). MMVM stores no generation sampler: the
# table has no unconditional generation, and a full-covariance GMM over D = 5 × 512 latents costs about (D/160)² times
# the 25 s CPU one EM fit takes at the quick runs' D = 160.
PAPER = dict(network="resnet", latent_dim=512, epochs=300, batch_size=256, lr=1e-3, classifier_epochs=10,
             checkpoint_every=5, num_views=5, coherence_classifier="cnn", store_latent_sampler=False)
MODELS = {"mvae": dict(num_random_subsets=3), "mmvae": dict(num_importance_samples=10), "mopoe_reference": {},
          "mvtcae": dict(alpha=5 / 6, beta=2.5), "mmvm": dict(alpha=0.0), "jmvae": dict(kl_warmup_epochs=2)}
COMPLETE_ONLY = {"jmvae"}
PAPER_REFERENCES = {m: "mmvm-code" if m == "mmvm" else "multivae" for m in MODELS}


def main(argv=None) -> None:
    p = experiment_parser(__doc__.splitlines()[0], "results/incomplete_polymnist", launch=True)
    p.add_argument("--models", nargs="+", default=["mopoe_reference", "mmvm"], choices=list(MODELS))
    p.add_argument("--etas", type=float, nargs="+", default=[1.0, 0.8, 0.5])
    p.add_argument("--dry-run", action="store_true", help="print the run names and exit")
    args = p.parse_args(argv)
    base = experiment_config(args, QUICK, PAPER, dataset="polymnist")
    modes = paper_references(args, PAPER_REFERENCES)
    configs = {}
    for model in args.models:
        for eta in args.etas:
            for complete in (False, True):
                if (eta == 1.0 and complete) or (model in COMPLETE_ONLY and not complete and eta < 1.0):
                    continue
                name = f"{model}_eta{eta:g}_{'complete' if complete else 'all'}"
                configs[name] = base.replace(model=model, keep_probability=eta, train_complete_only=complete,
                                             reference=modes.get(model), **MODELS[model])
    print(describe_references(args.models, modes))
    if args.dry_run:
        print("\n".join(configs))
        return
    with experiment_executor(args) as executor:
        rows = run_grid(configs, args.out, progress=not args.no_progress, executor=executor, threads=args.threads)
    print(f"{'run':<34}{'coherence':>10}{'latent':>8}")
    for r in rows:
        print(f"{r['run']:<34}{r['coherence']:>10.3f}{r['latent_acc']:>8.3f}")
    print(f"results: {args.out}/results.csv")


if __name__ == "__main__":
    main()
