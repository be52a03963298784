"""Multimodal data: the batch contract, in-memory datasets and the built-in datasets."""
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import DataValidationError, MultimodalDataset
from pyromm.data.digits import load_digits_multiview
from pyromm.data.linear_gaussian import LinearGaussianMultimodal
from pyromm.data.mnist import IdxFormatError, load_mnist, read_idx
from pyromm.data.paths import ChecksumError, cache_root, data_root, ensure_file, md5sum, verify_md5
from pyromm.data.polymnist import generate_polymnist, load_polymnist

__all__ = [
    "MultimodalBatch",
    "MultimodalDataset",
    "DataValidationError",
    "ChecksumError",
    "IdxFormatError",
    "data_root",
    "cache_root",
    "md5sum",
    "verify_md5",
    "ensure_file",
    "read_idx",
    "load_mnist",
    "generate_polymnist",
    "load_polymnist",
    "load_digits_multiview",
    "LinearGaussianMultimodal",
]

from pyromm.data.missing import complete_only, drop_by_label, drop_modalities  # noqa: E402

__all__ += ["drop_modalities", "drop_by_label", "complete_only"]
