"""MHD, the Multimodal Handwritten Digits (Vasco et al., 2022): an image, a pen trajectory and a spoken sound of a
digit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyromm.data.mhd import load_mhd
from pyromm.datasets.dataset import register_dataset
from pyromm.datasets.published import PublishedFormat
from pyromm.options import option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


@dataclass(frozen=True)
class MHDOptions:
    label_modality: bool = option(False, "also a modality 'label', the digit one-hot (10,) (MHD's symbol modality)")


class MHD(PublishedFormat):
    name = "mhd"
    doc = "MHD digits as image (1x28x28), pen trajectory (200,) and sound spectrogram (1x32x96), labelled 0..9"
    provenance = "mhd: Multimodal Handwritten Digits (Vasco et al., 2022), github.com/miguelsvasco/nexus_pytorch"
    Options = MHDOptions
    spectrogram_modalities = ("sound",)

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        modalities = ("image", "trajectory", "sound") + (("label",) if cfg.label_modality else ())
        train, test = (load_mhd(cfg.data_root, split, modalities=modalities) for split in ("train", "test"))
        return train, test


register_dataset(MHD())
