"""pyromm: multimodal variational autoencoders as Pyro code.

Subpackages: ``pyromm.data`` (datasets and the batch contract), ``pyromm.nn`` (networks),
``pyromm.models`` (multimodal VAEs), ``pyromm.infer`` (objectives, HMC), ``pyromm.train`` (trainer),
``pyromm.evaluation`` (metrics and plots); ``pyromm.run`` builds and runs a ``RunConfig``.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyromm")
except PackageNotFoundError:
    __version__ = "0+unknown"
