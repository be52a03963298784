"""The datasets runs can name, each registered by its own module: ``DATASETS[name]`` (``pyromm datasets`` lists them).

Add one in a file of your own: subclass :class:`Dataset`, call :func:`register_dataset`, and name the file in the
config's ``plugins``. Importing this package registers the built-in datasets, in the order below.
"""
from pyromm.datasets.dataset import DATASETS, Dataset, SourceDataset, made_from, register_dataset
from pyromm.datasets import digits, polymnist, rats, mnist_fsdd, shapes, files  # noqa: E402,F401  (registration)
from pyromm.datasets import mnist_svhn, celeba, cub, mhd, mnist, fsdd  # noqa: E402,F401  (registration)

__all__ = ["DATASETS", "Dataset", "SourceDataset", "made_from", "register_dataset"]
