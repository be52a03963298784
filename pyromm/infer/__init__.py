"""Objectives: one layer of divergences and bounds shared by every model."""
from pyromm.infer.divergences import RATE_MODES, analytic_kl, jensen_kl, monte_carlo_kl, rate
from pyromm.infer.elbo import MultimodalELBO
from pyromm.infer.hmc import DivergenceWarning, batched_hmc, nuts_subset_posterior, reference_hmc
from pyromm.infer.iwae import DReG, IWAE, dreg_surrogate, iwae_bound
from pyromm.infer.jmvae import JMVAEObjective, JointELBOStage, UnimodalELBOStage, telbo_stages
from pyromm.infer.jnf import FlowPosteriorFit, jnf_stages
from pyromm.infer.objective import Objective, ObjectiveOutput
from pyromm.infer.pyro_elbo import PyroELBO
from pyromm.infer.projectors import DCCAObjective, InfoNCEObjective, cca_loss, info_nce_loss
from pyromm.infer.subset_posterior import SubsetTarget
from pyromm.infer.subset_sampling import SubsetHMC
from pyromm.infer.shared_elbo import MVTCAEObjective, SharedELBO, SubsampledELBO

__all__ = [
    "DivergenceWarning",
    "batched_hmc",
    "nuts_subset_posterior",
    "reference_hmc",
    "SubsetTarget",
    "SubsetHMC",
    "DReG",
    "IWAE",
    "dreg_surrogate",
    "iwae_bound",
    "JMVAEObjective",
    "JointELBOStage",
    "UnimodalELBOStage",
    "telbo_stages",
    "FlowPosteriorFit",
    "jnf_stages",
    "DCCAObjective",
    "InfoNCEObjective",
    "cca_loss",
    "info_nce_loss",
    "RATE_MODES",
    "analytic_kl",
    "jensen_kl",
    "monte_carlo_kl",
    "rate",
    "MultimodalELBO",
    "Objective",
    "ObjectiveOutput",
    "PyroELBO",
    "SharedELBO",
    "SubsampledELBO",
    "MVTCAEObjective",
]
