"""Your own data: an ``.npz`` file or a directory of ``.npy``/``.pt`` files (layout: :mod:`pyromm.data.own`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyromm.data.own import fingerprint, load_files
from pyromm.datasets.dataset import Dataset, register_dataset
from pyromm.options import ConfigError, option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


@dataclass(frozen=True)
class FilesOptions:
    data_path: str | None = option(None, "required: an .npz file or a directory of .npy/.pt files, one array per "
                                   "modality, optional labels and mask_<modality>")
    test_fraction: float = option(0.2, "the share of samples, in (0, 1), held out as the test split (seeded, seed 0)")


class Files(Dataset):
    name = "files"
    doc = "your own arrays (data_path), one modality per array; the config's modalities tables give their likelihoods"
    Options = FilesOptions

    def check(self, cfg: RunConfig) -> None:
        if cfg.data_path is None:
            raise ConfigError("dataset 'files' needs data_path: an .npz file or a directory of .npy/.pt files")
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {cfg.test_fraction}")

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        return load_files(cfg)

    def cache_key(self, cfg: RunConfig) -> str:
        """The name, the data's md5 fingerprint and the test fraction."""
        return f"files-{fingerprint(cfg.data_path)}-test{cfg.test_fraction:g}"

    def prepare(self, options: Any, root: Path, cache: Path) -> None:
        print("  files: nothing to prepare (your own data are read from data_path when a run starts)")


register_dataset(Files())
