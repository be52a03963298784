"""Objectives as Pyro ELBOs over the traces of a model and its guide, and the samplers of subset posteriors."""
from pyromm.infer.hmc import DivergenceWarning, batched_hmc, nuts_subset_posterior, reference_hmc
from pyromm.infer.iwae import DReG, IWAE, detach_parameters, importance_weights, iwae_bound
from pyromm.infer.objective import ELBOObjective, Objective, ObjectiveOutput
from pyromm.infer.projectors import ProjectorPretraining, cca_loss, info_nce_loss
from pyromm.infer.rate_elbo import RateELBO
from pyromm.infer.rates import RATE_MODES, RateModeError, analytic_kl, jensen_kl, rate, register_jensen
from pyromm.infer.stages import Stage, jnf_stages, telbo_stages
from pyromm.infer.stratified_elbo import StratifiedIWAE
from pyromm.infer.subset_posterior import SubsetTarget
from pyromm.infer.subset_sampling import SubsetHMC
from pyromm.infer.terms_elbo import TermsELBO
from pyromm.infer.traces import SiteError

__all__ = [
    "DReG",
    "DivergenceWarning",
    "ELBOObjective",
    "IWAE",
    "Objective",
    "ObjectiveOutput",
    "ProjectorPretraining",
    "RATE_MODES",
    "RateELBO",
    "RateModeError",
    "SiteError",
    "Stage",
    "StratifiedIWAE",
    "SubsetHMC",
    "SubsetTarget",
    "TermsELBO",
    "analytic_kl",
    "batched_hmc",
    "cca_loss",
    "detach_parameters",
    "importance_weights",
    "info_nce_loss",
    "iwae_bound",
    "jensen_kl",
    "jnf_stages",
    "nuts_subset_posterior",
    "rate",
    "reference_hmc",
    "register_jensen",
    "telbo_stages",
]
