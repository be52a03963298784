"""Multimodal data: the batch contract, in-memory datasets and the built-in datasets."""
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import DataValidationError, MultimodalDataset
from pyromm.data.digits import load_digits_multiview
from pyromm.data.linear_gaussian import LinearGaussianMultimodal
from pyromm.data.mnist import IdxFormatError, load_mnist, read_idx
from pyromm.data.paths import ChecksumError, cache_root, data_root, ensure_file, md5sum, verify_md5
from pyromm.data.polymnist import generate_polymnist, load_polymnist
from pyromm.data.audio import AudioFormatError, RecordingTooShortError, SpectrogramSettings
from pyromm.data.fsdd import load_fsdd_spectrograms
from pyromm.data.mnist_fsdd import load_mnist_fsdd

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
    "AudioFormatError",
    "RecordingTooShortError",
    "SpectrogramSettings",
    "load_fsdd_spectrograms",
    "load_mnist_fsdd",
    "load_digits_multiview",
    "LinearGaussianMultimodal",
]

from pyromm.data.missing import complete_only, drop_by_label, drop_increasing_with_label, drop_modalities  # noqa: E402

__all__ += ["drop_modalities", "drop_by_label", "drop_increasing_with_label", "complete_only"]

from pyromm.data.files import DataFormatError, MissingDataError, TruncatedArrayError  # noqa: E402
from pyromm.data.text import UnknownCharacterError, Vocabulary  # noqa: E402
from pyromm.data.rats import ColumnCountError, load_rats  # noqa: E402
from pyromm.data.mnist_svhn import load_mnist_svhn  # noqa: E402
from pyromm.data.celeba import load_celeba  # noqa: E402
from pyromm.data.cub import load_cub  # noqa: E402
from pyromm.data.mhd import load_mhd  # noqa: E402
from pyromm.data.shapes import load_shapes  # noqa: E402

__all__ += [
    "DataFormatError",
    "MissingDataError",
    "TruncatedArrayError",
    "ColumnCountError",
    "UnknownCharacterError",
    "Vocabulary",
    "load_rats",
    "load_mnist_svhn",
    "load_celeba",
    "load_cub",
    "load_mhd",
    "load_shapes",
]
