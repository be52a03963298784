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

# Exported from pyromm.saved_runs on first use, so that `import pyromm.config` (the CLI's start) stays light.
SAVED_RUNS_EXPORTS = ("load", "builder_config", "LoadedRun", "RunLoadError")
__all__ = ["__version__", *SAVED_RUNS_EXPORTS]


def __getattr__(name: str):
    if name in SAVED_RUNS_EXPORTS:
        from pyromm import saved_runs

        return getattr(saved_runs, name)
    raise AttributeError(f"module 'pyromm' has no attribute {name!r}")
