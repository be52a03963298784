"""pyromm: multimodal variational autoencoders as Pyro code.

Subpackages: ``pyromm.data`` (datasets and the batch contract), ``pyromm.nn`` (networks),
``pyromm.models`` (multimodal VAEs), ``pyromm.infer`` (objectives, HMC), ``pyromm.train`` (trainer),
``pyromm.evaluation`` (metrics and plots); ``pyromm.run`` builds and runs a ``RunConfig``; ``pyromm.load(run_dir)``
loads a trained run (``pyromm.saved_runs``); ``pyromm.generation`` fits and stores the latent samplers that
``model.sample(n)`` of models without an unconditional prior draws from.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyromm")
except PackageNotFoundError:
    __version__ = "0+unknown"

from pyromm.saved_runs import LoadedRun, RunLoadError, builder_config, load  # noqa: E402  (after __version__)

__all__ = ["__version__", "load", "builder_config", "LoadedRun", "RunLoadError"]
