"""CUB image-captions (Shi et al., 2019): a bird image and one of its ten captions."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyromm.data.cub import load_cub
from pyromm.datasets.dataset import register_dataset
from pyromm.datasets.published import PublishedFormat

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


class CUB(PublishedFormat):
    name = "cub"
    doc = ("CUB birds (image, 3x64x64), one sample per caption (caption, 32 word codes: a 'categorical' likelihood "
           "over the vocabulary); labels: 200 classes, test classes unseen in training")
    provenance = (
        "cub: CUB-200-2011 images (Wah et al., 2011) with captions (Reed et al., 2016), as prepared for MMVAE "
        "(Shi et al., 2019)"
    )

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        train, test = (load_cub(cfg.data_root, split) for split in ("train", "test"))
        return train, test


register_dataset(CUB())
