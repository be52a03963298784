"""The dataset registry: every built-in registered with its doc and documented options, loading through the registry
equal to the loaders, the datasets' own checks, a dataset added in a test file, and `pyromm data` over the registry."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pyromm.cli import main
from pyromm.config import RunConfig
from pyromm.data import load_digits_multiview, load_shapes
from pyromm.data import celeba as celeba_files
from pyromm.data import mnist_svhn as mnist_svhn_files
from pyromm.data.celeba import load_celeba
from pyromm.data.cub import load_cub
from pyromm.data.dataset import MultimodalDataset
from pyromm.data.mhd import load_mhd
from pyromm.data.mnist import MNIST_MD5
from pyromm.data.mnist_svhn import load_mnist_svhn
from pyromm.data.polymnist import polymnist_cache_dir, polymnist_metadata
from pyromm.data.rats import NEURONS, RATS, load_rats, rat_files
from pyromm.datasets import DATASETS, Dataset, register_dataset
from pyromm.options import ConfigError, check_options, describe, option
from test_loaders_published import _celeba, _cub, _mhd, _svhn

BUILT_IN = ("digits", "polymnist", "translated_polymnist", "rats", "mnist_fsdd", "shapes", "files", "mnist_svhn",
            "celeba", "cub", "mhd", "mnist", "fsdd")
# The general RunConfig fields a dataset's load reads; each test adds the dataset's own options.
GENERAL = dict(seed=0, data_root=None, cache_root=None, train_limit=None, test_limit=None, modalities=None,
               likelihood="laplace")


def config(dataset: Dataset, **values) -> SimpleNamespace:
    """A stand-in RunConfig: the general fields, the dataset's option defaults, then ``values``."""
    defaults = {f.name: getattr(dataset.Options(), f.name) for f in dataclasses.fields(dataset.Options)}
    return SimpleNamespace(**{**GENERAL, **defaults, **values})


def assert_same(a: MultimodalDataset, b: MultimodalDataset) -> None:
    assert a.modalities == b.modalities
    for name in a.modalities:
        assert torch.equal(a.data[name], b.data[name]), name
    assert torch.equal(a.labels, b.labels)


def test_every_built_in_is_registered_in_order_with_a_doc_line_and_documented_options() -> None:
    assert DATASETS.names()[: len(BUILT_IN)] == BUILT_IN
    built_in = [DATASETS[name] for name in BUILT_IN]  # other tests may have registered plug-ins after them
    for dataset in built_in:
        assert dataset.doc.strip() and "\n" not in dataset.doc, dataset.name
        for info in describe(dataset.Options):
            assert info.doc.strip() and "\n" not in info.doc, f"{dataset.name}.{info.name}"
        check_options(dataset.Options(), dataset.name)  # the defaults have the declared types
    assert [d.name for d in built_in if not d.trainable] == ["mnist", "fsdd"]
    assert all(d.provenance for d in built_in if d.name != "files")


def test_the_declared_options() -> None:
    def options(name: str) -> dict[str, tuple[str, object]]:
        return {info.name: (info.type, info.default) for info in describe(DATASETS[name].Options)}

    for name in ("digits", "polymnist", "translated_polymnist", "rats"):
        assert options(name)["num_views"] == ("int", 3)
        assert describe(DATASETS[name].Options)[0].choices == (1, 2, 3, 4, 5)
    assert options("polymnist") == {"num_views": ("int", 3), "released_path": ("str | None", None)}
    assert options("digits") == options("translated_polymnist") == options("rats") == {"num_views": ("int", 3)}
    assert options("mnist_fsdd") == {"sound_missing_max": ("float", 0.0)}
    assert options("files") == {"data_path": ("str | None", None), "test_fraction": ("float", 0.2)}
    assert options("mnist_svhn") == {"multiplier": ("int", 30), "max_per_class": ("int", 10000)}
    assert options("mhd") == {"label_modality": ("bool", False)}
    for name in ("shapes", "celeba", "cub", "mnist", "fsdd"):
        assert options(name) == {}
    assert DATASETS["mnist_fsdd"].spectrogram_modalities == ("sound",) == DATASETS["mhd"].spectrogram_modalities
    assert [d.name for d in DATASETS if d.seeded] == ["digits"]


def test_unknown_dataset_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'polymnst' \\(did you mean 'polymnist'\\?\\)"):
        DATASETS["polymnst"]


def test_digits_through_the_registry_equal_the_loader() -> None:
    train, test = DATASETS["digits"].load(config(DATASETS["digits"], seed=3, num_views=2))
    assert_same(train, load_digits_multiview("train", 2, seed=3))
    assert_same(test, load_digits_multiview("test", 2, seed=3))


def test_shapes_draw_only_the_limited_prefix() -> None:
    train, test = DATASETS["shapes"].load(config(DATASETS["shapes"], train_limit=20, test_limit=10, seed=7))
    assert len(train) == 20 and len(test) == 10
    assert_same(train, load_shapes("train", seed=0, limit=20))  # seed 0 whatever the run's seed


def test_polymnist_reads_the_cache_of_seed_0_and_its_views(tmp_path: Path) -> None:
    for translated, name in ((False, "polymnist"), (True, "translated_polymnist")):
        directory = polymnist_cache_dir(tmp_path, 2, translated, 0)
        directory.mkdir(parents=True)
        (directory / "metadata.json").write_text(json.dumps(polymnist_metadata(2, translated, 0)))
        for split, n in (("train", 4), ("test", 2)):
            for m in range(2):
                np.save(directory / f"{split}_m{m}.npy", np.full((n, 3, 28, 28), 10 * m + translated, dtype=np.uint8))
            np.save(directory / f"{split}_labels.npy", np.arange(n, dtype=np.int64))
        train, test = DATASETS[name].load(config(DATASETS[name], num_views=2, cache_root=str(tmp_path), seed=5))
        assert (len(train), len(test), train.modalities) == (4, 2, ["m0", "m1"])
        assert int(train.data["m1"][0, 0, 0, 0]) == 10 + translated and test.labels.tolist() == [0, 1]


def test_rats_num_views_takes_the_first_rats(tmp_path: Path) -> None:
    for rat in RATS:
        info_path, spike_path = rat_files(tmp_path, rat)
        info_path.parent.mkdir(parents=True)
        info = np.zeros((20, 4), dtype=np.int64)
        info[:, 3] = np.arange(20) % 4 + 1  # 5 trials of each odour
        np.save(info_path, info)
        np.save(spike_path, np.random.default_rng(0).poisson(1.0, (20, NEURONS[rat], 300)).astype(np.int16))
    train, test = DATASETS["rats"].load(RunConfig(model="mmvm", dataset="rats", num_views=2, data_root=str(tmp_path)))
    assert train.modalities == ["barat", "buchanan"]
    assert_same(train, load_rats(tmp_path, "train", rats=RATS[:2]))
    assert_same(test, load_rats(tmp_path, "test", rats=RATS[:2]))


def test_celeba_through_the_registry(tmp_path: Path, monkeypatch) -> None:
    _celeba(tmp_path, height=218, width=178, crop=148)
    monkeypatch.setattr(celeba_files, "CELEBA_MD5", {})  # the fabricated lists are not the published ones
    train, test = DATASETS["celeba"].load(config(DATASETS["celeba"], data_root=str(tmp_path), train_limit=2))
    assert (len(train), len(test)) == (2, 2)  # train_limit: only the first two training faces are read
    assert_same(train, load_celeba(tmp_path, "train", limit=2, checksums={}))
    assert_same(test, load_celeba(tmp_path, "test", checksums={}))


def test_cub_through_the_registry(tmp_path: Path) -> None:
    _cub(tmp_path)
    train, test = DATASETS["cub"].load(config(DATASETS["cub"], data_root=str(tmp_path)))
    assert_same(train, load_cub(tmp_path, "train"))
    assert_same(test, load_cub(tmp_path, "test"))
    assert train.event_shapes == {"image": (3, 64, 64), "caption": (32,)}


def test_mhd_through_the_registry_with_and_without_the_label_modality(tmp_path: Path) -> None:
    for name in ("mhd_train.pt", "mhd_test.pt"):
        _mhd(tmp_path / "mhd" / name)
    train, test = DATASETS["mhd"].load(config(DATASETS["mhd"], data_root=str(tmp_path)))
    assert_same(train, load_mhd(tmp_path, "train"))
    assert_same(test, load_mhd(tmp_path, "test"))
    train, _ = DATASETS["mhd"].load(config(DATASETS["mhd"], data_root=str(tmp_path), label_modality=True))
    assert train.modalities == ["image", "trajectory", "sound", "label"]


def test_mnist_svhn_through_the_registry(require_shared_file, tmp_path: Path, monkeypatch) -> None:
    shared = require_shared_file(*(f"mnist/{name}" for name in MNIST_MD5))
    (tmp_path / "mnist").symlink_to(shared / "mnist")
    for split in ("train", "test"):
        _svhn(tmp_path / "svhn" / f"{split}_32x32.mat", [1 + i % 10 for i in range(20)])
    monkeypatch.setattr(mnist_svhn_files, "SVHN_MD5", {})  # fabricated SVHN files: nothing to check or download
    cfg = config(DATASETS["mnist_svhn"], data_root=str(tmp_path), multiplier=2, max_per_class=3)
    train, test = DATASETS["mnist_svhn"].load(cfg)
    assert len(train) == len(test) == 10 * 2 * 2  # 10 digits x 2 SVHN images each x multiplier 2
    assert_same(train, load_mnist_svhn(tmp_path, "train", multiplier=2, max_per_class=3, checksums={}, download=False))
    assert_same(test, load_mnist_svhn(tmp_path, "test", multiplier=2, max_per_class=3, checksums={}, download=False))


def test_files_checks_name_the_option_and_it_loads(tmp_path: Path) -> None:
    files = DATASETS["files"]
    with pytest.raises(ConfigError, match="dataset 'files' needs data_path"):
        files.check(config(files))
    for fraction in (0.0, 1.0):
        with pytest.raises(ConfigError, match=f"test_fraction must lie in \\(0, 1\\), got {fraction}"):
            files.check(config(files, data_path="x.npz", test_fraction=fraction))
    path = tmp_path / "data.npz"
    np.savez(path, a=np.arange(20, dtype=np.float32).reshape(10, 2), labels=np.arange(10))
    cfg = config(files, data_path=str(path), test_fraction=0.3)
    files.check(cfg)
    train, test = files.load(cfg)
    assert (len(train), len(test)) == (7, 3)
    assert sorted(train.labels.tolist() + test.labels.tolist()) == list(range(10))


def test_other_datasets_checks_name_the_option() -> None:
    mnist_fsdd, mnist_svhn = DATASETS["mnist_fsdd"], DATASETS["mnist_svhn"]
    mnist_fsdd.check(config(mnist_fsdd, sound_missing_max=1.0))
    with pytest.raises(ConfigError, match="sound_missing_max must lie in \\[0, 1\\], got 1.5"):
        mnist_fsdd.check(config(mnist_fsdd, sound_missing_max=1.5))
    with pytest.raises(ConfigError, match="max_per_class must be >= 1, got 0"):
        mnist_svhn.check(config(mnist_svhn, max_per_class=0))
    with pytest.raises(ConfigError, match="rats.num_views must be one of \\(1, 2, 3, 4, 5\\), got 6"):
        check_options(DATASETS["rats"].Options(num_views=6), "rats")


def test_a_source_refuses_to_check_and_load_naming_the_datasets_made_from_it() -> None:
    with pytest.raises(ConfigError, match="train on one made from it: polymnist, translated_polymnist, mnist_fsdd, "
                                          "mnist_svhn$"):
        DATASETS["mnist"].load(config(DATASETS["mnist"]))
    with pytest.raises(ConfigError, match="dataset 'fsdd' .* made from it: mnist_fsdd$"):
        DATASETS["fsdd"].load(config(DATASETS["fsdd"]))
    with pytest.raises(ConfigError, match="dataset 'fsdd' .* made from it: mnist_fsdd$"):
        DATASETS["fsdd"].check(config(DATASETS["fsdd"]))  # a RunConfig naming it is refused when made


@dataclasses.dataclass(frozen=True)
class RampOptions:
    num_views: int = option(2, "number of ramps", choices=(1, 2, 3))
    slope: float = option(1.0, "the ramps' slope")


class Ramps(Dataset):
    """A dataset added in a test file: ``num_views`` modalities, ramps of the sample index times ``slope``."""

    name = "test_ramps"
    doc = "ramps of the sample index, one per view"
    provenance = "test_ramps: made up in tests/test_datasets.py"
    Options = RampOptions

    def load(self, cfg):
        def split(n: int) -> MultimodalDataset:
            ramp = cfg.slope * torch.arange(n, dtype=torch.float32)[:, None]
            return MultimodalDataset({f"r{m}": ramp + m for m in range(cfg.num_views)}, torch.arange(n) % 2)

        return split(6), split(4)

    def prepare(self, options, root, cache):
        print(f"  ramps: {options.num_views} views, slope {options.slope}")

    def describe(self, root, cache):
        return ["Ramps", "  always available"]


@pytest.fixture
def ramps(monkeypatch) -> Dataset:
    """Ramps registered, in a copy of the registry that the test's end discards."""
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    return register_dataset(Ramps())


def test_a_dataset_added_in_a_test_file_is_registered_and_prepared(ramps, tmp_path: Path, capsys) -> None:
    assert DATASETS["test_ramps"] is ramps and DATASETS.names()[-1] == "test_ramps"
    with pytest.raises(ValueError, match="a dataset named 'test_ramps' is already registered"):
        register_dataset(Ramps())
    train, test = ramps.load(config(ramps, slope=2.0))
    assert train.modalities == ["r0", "r1"] and train.data["r1"][:, 0].tolist() == [1, 3, 5, 7, 9, 11]
    roots = ["--root", str(tmp_path), "--cache", str(tmp_path)]
    assert main(["data", "prepare", "test_ramps", "--views", "3", *roots]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "  ramps: 3 views, slope 1.0"
    assert main(["data", "prepare", "test_ramps", "--views", "4", *roots]) == 2
    assert "test_ramps.num_views must be one of (1, 2, 3), got 4" in capsys.readouterr().err
    assert main(["data", "list", *roots]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[out.index("Ramps") - 1 : out.index("Ramps") + 2] == ["", "Ramps", "  always available"]
    assert out[-1] == "  test_ramps: made up in tests/test_datasets.py"


def test_data_list_shows_each_dataset_then_the_provenance(tmp_path: Path, capsys) -> None:
    assert main(["data", "list", "--root", str(tmp_path), "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    headings = [out[i + 1].split("  (")[0] for i, line in enumerate(out[:-1]) if line == ""]
    assert headings == [
        "digits: always available (bundled with scikit-learn)", "PolyMNIST backgrounds", "Cached PolyMNIST", "rats",
        "shapes: always available (drawn when a run starts, nothing stored)", "mnist_svhn", "celeba", "cub", "mhd",
        "MNIST", "FSDD recordings", "Provenance",
    ]
    provenance = out[out.index("Provenance") + 1 :]
    assert provenance == [f"  {d.provenance}" for d in DATASETS if d.provenance]
