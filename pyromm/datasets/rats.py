"""Rats: hippocampal spike counts of up to five rats smelling the same odours, one modality per rat."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyromm.data.rats import RATS, load_rats
from pyromm.datasets.dataset import register_dataset
from pyromm.datasets.published import PublishedFormat
from pyromm.options import option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


@dataclass(frozen=True)
class RatsOptions:
    num_views: int = option(3, "how many rats, one modality each: the first of barat, buchanan, mitt, stella, "
                            "superchris (5: all, as in the MMVM paper)", choices=(1, 2, 3, 4, 5))


class Rats(PublishedFormat):
    name = "rats"
    doc = "spike counts of 1..5 rats' hippocampal neurons in 100 ms windows, labelled by odour (4 classes)"
    provenance = "rats: hippocampal spike counts of five rats (Shahbaba et al., 2022), Dryad doi:10.7280/D14X30, CC0"
    Options = RatsOptions

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """A fifth of each odour's paired trials held out for testing (seed 0), or with ``rats_split='all'`` (the
        MMVM code) every sample as both train and test split."""
        rats = RATS[: cfg.num_views]
        if cfg.setting("rats_split") == "all":
            every = load_rats(cfg.data_root, "all", rats=rats)
            return every, every
        train, test = (load_rats(cfg.data_root, split, rats=rats) for split in ("train", "test"))
        return train, test

    def cache_key(self, cfg: RunConfig) -> str:
        """The name and options, then ``-split_all`` where the classifiers train on every sample."""
        return super().cache_key(cfg) + ("-split_all" if cfg.setting("rats_split") == "all" else "")


register_dataset(Rats())
