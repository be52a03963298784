"""PolyMNIST and Translated PolyMNIST: MNIST digits on 1 to 5 background images, generated once into the cache root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyromm.data import cache_root, load_polymnist
from pyromm.data.polymnist_released import load_released_polymnist
from pyromm.datasets.steps import prepare_mnist, prepare_polymnist, polymnist_lines
from pyromm.datasets.dataset import Dataset, register_dataset
from pyromm.options import option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset

SEED = 0  # the data do not depend on the run's seed, so every run of a variant shares one cache


@dataclass(frozen=True)
class PolyMNISTOptions:
    num_views: int = option(3, "number of views m0.., each the digit on its own background", choices=(1, 2, 3, 4, 5))


@dataclass(frozen=True)
class ReleasedPolyMNISTOptions(PolyMNISTOptions):
    released_path: str | None = option(None, "a folder of the released PolyMNIST PNGs (train|test/m0..m4/<index>."
                                       "<label>.png): read instead of generating, as the reference code does")


class PolyMNIST(Dataset):
    name = "polymnist"
    doc = "PolyMNIST: MNIST on 1..5 backgrounds, 3x28x28 images (60,000 train / 10,000 test tuples); needs MNIST"
    provenance = (
        "PolyMNIST (Sutter et al., 2021): generated here from MNIST + 5 background images (thomassutter/MoPoE), one "
        "seeded PCG64 generator; view m1 uses a stand-in background"
    )
    Options = ReleasedPolyMNISTOptions
    sources = ("mnist",)
    translated = False

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        if cfg.released_path is not None:
            train, test = (load_released_polymnist(cfg.released_path, split, cfg.num_views) for split in ("train", "test"))
            return train, test
        return self.generated(cfg)

    def generated(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """Both splits as pyromm generates them (cached under the cache root)."""
        cache = cache_root(cfg.cache_root)
        train, test = (
            load_polymnist(cfg.data_root, split, cfg.num_views, translated=self.translated, seed=SEED, cache_dir=cache)
            for split in ("train", "test")
        )
        return train, test

    def prepare(self, options: PolyMNISTOptions, root: Path, cache: Path) -> None:
        """Verify MNIST (downloading missing files) and the backgrounds, then generate both splits into the cache
        root (never into the data root)."""
        prepare_mnist(root)
        prepare_polymnist(root, cache, options.num_views, self.translated, SEED)

    def describe(self, root: Path, cache: Path) -> list[str]:
        """The background images and the cached variants of both PolyMNIST and Translated PolyMNIST."""
        return polymnist_lines(root, cache)


class TranslatedPolyMNIST(PolyMNIST):
    name = "translated_polymnist"
    doc = "Translated PolyMNIST: PolyMNIST with the digits shrunk to 21x21 at a random offset; needs MNIST"
    provenance = (
        "Translated PolyMNIST (Daunhawer et al., 2022): PolyMNIST with digits shrunk to 21x21 and pasted at a random "
        "offset"
    )
    Options = PolyMNISTOptions
    translated = True

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        return self.generated(cfg)

    def describe(self, root: Path, cache: Path) -> list[str]:
        """None: ``polymnist`` lists the backgrounds and the cached variants of both."""
        return []


register_dataset(PolyMNIST())
register_dataset(TranslatedPolyMNIST())
