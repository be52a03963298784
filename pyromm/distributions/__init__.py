"""Distributions used as multimodal priors and posteriors."""
from pyromm.distributions.expert_mixture import ExpertMixture
from pyromm.distributions.fixed_scale import FixedScaleLaplace, FixedScaleNormal
from pyromm.distributions.flows import FlowConfigError, FlowPosterior, MAFSampler, maf
from pyromm.distributions.gaussian_mixture import GaussianMixtureSampler
from pyromm.distributions.mixture import DiagNormalMixture
from pyromm.distributions.stratum import MixtureStratum

__all__ = ["DiagNormalMixture", "ExpertMixture", "FixedScaleLaplace", "FixedScaleNormal", "FlowConfigError", "FlowPosterior",
    "GaussianMixtureSampler", "MAFSampler", "MixtureStratum", "maf"]
