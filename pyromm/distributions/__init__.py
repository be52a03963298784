"""Distributions used as multimodal priors and posteriors."""
from pyromm.distributions.mixture import DiagNormalMixture

__all__ = ["DiagNormalMixture"]
