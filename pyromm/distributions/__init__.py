"""Distributions used as multimodal priors and posteriors."""
from pyromm.distributions.flows import FlowConfigError, FlowPosterior, MAFSampler, maf
from pyromm.distributions.mixture import DiagNormalMixture

__all__ = ["DiagNormalMixture", "FlowConfigError", "FlowPosterior", "MAFSampler", "maf"]
