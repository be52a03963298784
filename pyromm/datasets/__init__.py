"""The datasets runs can name, each registered by its own module: ``DATASETS[name]`` (``pyromm datasets`` lists them).

Add one in a file of your own: subclass :class:`Dataset`, call :func:`register_dataset`, and name the file in the
config's ``plugins``."""
from pyromm.datasets.dataset import DATASETS, Dataset, register_dataset

__all__ = ["DATASETS", "Dataset", "register_dataset"]
