"""Loaders of published datasets on miniature files fabricated in each published format: the batch contract,
labels and masks, and the named errors for missing files, wrong md5s and truncated arrays; `pyromm data`."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from pyromm.cli import main
from pyromm.data.celeba import load_celeba
from pyromm.data.cub import load_cub
from pyromm.data.files import DataFormatError, MissingDataError, TruncatedArrayError
from pyromm.data.mhd import load_mhd
from pyromm.data.mnist import MNIST_MD5
from pyromm.data.mnist_svhn import load_mnist_svhn, load_svhn, pair_by_label
from pyromm.data.paths import ChecksumError
from pyromm.data.published import DATASETS
from pyromm.data.rats import NEURONS, RATS, rat_files
from pyromm.data.text import Vocabulary, decode_chars, tokenize

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
BLUE, RED = (20, 40, 230), (230, 30, 20)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _check_contract(dataset, n: int, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype]) -> None:
    assert len(dataset) == n and dataset.event_shapes == shapes and dataset.mask is None
    assert {k: v.dtype for k, v in dataset.data.items()} == dtypes
    batch = next(dataset.batches(4))
    assert batch.batch_size == min(4, n) and batch.labels.shape[0] == batch.batch_size and batch.mask is None


# ------------------------------------------------------------------------------------------------ MNIST-SVHN


def _svhn(path: Path, labels: list[int]) -> None:
    """An SVHN .mat file: X (32, 32, 3, N) uint8 with image i filled with 10 * label_i, y (N, 1) labels 1..10."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.zeros((32, 32, 3, len(labels)), dtype=np.uint8)
    images[:] = 10 * np.array(labels, dtype=np.uint8)
    scipy.io.savemat(path, {"X": images, "y": np.array(labels, dtype=np.uint8)[:, None]})


def test_pair_by_label_matches_digits() -> None:
    a, b = np.array([0, 1, 0, 1, 1]), np.array([1, 0, 1, 0, 0, 1])
    ia, ib = pair_by_label(a, b, multiplier=3, seed=5)
    assert (a[ia] == b[ib]).all() and len(ia) == 3 * (2 + 3)
    # per digit the first n = min(#a, #b) members of each side: digit 0 (n = 2) takes a 0, 2 and b 1, 3 (not 4);
    # digit 1 (n = 3) takes a 1, 3, 4 and b 0, 2, 5
    assert sorted(set(ia.tolist())) == [0, 1, 2, 3, 4] and sorted(set(ib.tolist())) == [0, 1, 2, 3, 5]
    assert np.bincount(ia).tolist() == [3, 3, 3, 3, 3]
    again = pair_by_label(a, b, multiplier=3, seed=5)
    assert np.array_equal(again[0], ia) and np.array_equal(again[1], ib)
    assert len(pair_by_label(a, b, multiplier=2, max_per_class=1)[0]) == 2 * 2  # one of each digit, twice


def test_mnist_svhn_in_the_batch_contract(require_shared_file, tmp_path: Path) -> None:
    shared = require_shared_file("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
    (tmp_path / "mnist").symlink_to(shared / "mnist")
    labels = [1 + i % 10 for i in range(30)]  # 3 of every digit; 10 stands for 0
    _svhn(tmp_path / "svhn" / "test_32x32.mat", labels)
    data = load_mnist_svhn(tmp_path, "test", multiplier=2, checksums={}, download=False)
    shapes, dtypes = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}, {"mnist": torch.uint8, "svhn": torch.uint8}
    _check_contract(data, 10 * 3 * 2, shapes, dtypes)
    assert sorted(set(data.labels.tolist())) == list(range(10))
    svhn_digit = torch.remainder(data.data["svhn"][:, 0, 0, 0].long() // 10, 10)
    assert torch.equal(svhn_digit, data.labels)  # every SVHN image shows the pair's digit
    images, digits = load_svhn(tmp_path, "test", checksums={}, download=False)
    assert images.shape == (30, 3, 32, 32) and digits[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_svhn_named_errors(tmp_path: Path, no_network) -> None:
    with pytest.raises(MissingDataError, match="test_32x32.mat"):
        load_svhn(tmp_path, "test", download=False)
    with pytest.raises(FileNotFoundError, match="ufldl.stanford.edu"):
        load_svhn(tmp_path, "test")  # tries the official URL, which the test blocks
    _svhn(tmp_path / "svhn" / "train_32x32.mat", [1, 2, 3])
    with pytest.raises(ChecksumError, match="e26dedcc434d2e4c54c9b2d4a06d8373"):
        load_svhn(tmp_path, "train")
    path = tmp_path / "svhn" / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(TruncatedArrayError, match="truncated"):
        load_svhn(tmp_path, "train", checksums={})
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 5), dtype=np.uint8), "y": np.ones((4, 1), dtype=np.uint8)})
    with pytest.raises(TruncatedArrayError, match="5 images but y 4 labels"):
        load_svhn(tmp_path, "train", checksums={})


# ---------------------------------------------------------------------------------------------------- CelebA

CELEBA_PARTITION = [0, 0, 0, 1, 2, 2]


def _celeba(
    root: Path, count: int = 6, rows: int | None = None, height: int = 22, width: int = 18, crop: int = 12
) -> tuple[Path, np.ndarray]:
    """list_attr_celeba.txt, list_eval_partition.txt and JPEG faces, red with a blue central crop x crop square."""
    directory = root / "celeba"
    (directory / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    presence = rng.random((count, len(CELEBA_ATTRIBUTES))) < 0.25
    lines = [str(count), " ".join(CELEBA_ATTRIBUTES)]
    for i in range(rows if rows is not None else count):
        values = "  ".join(" 1" if p else "-1" for p in presence[i])
        lines.append(f"{i + 1:06d}.jpg {values}")
    (directory / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = "".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(CELEBA_PARTITION))
    (directory / "list_eval_partition.txt").write_text(partition)
    for i in range(count):
        face = np.full((height, width, 3), RED, dtype=np.uint8)
        top, left = (height - crop) // 2, (width - crop) // 2
        face[top : top + crop, left : left + crop] = BLUE
        Image.fromarray(face).save(directory / "img_align_celeba" / f"{i + 1:06d}.jpg", quality=95, subsampling=0)
    return directory, presence


def test_celeba_in_the_batch_contract(tmp_path: Path) -> None:
    _, presence = _celeba(tmp_path)
    train = load_celeba(tmp_path, "train", crop=12, size=8, checksums={}, seed=4)
    _check_contract(train, 3, {"image": (3, 8, 8), "text": (256,)}, {"image": torch.uint8, "text": torch.long})
    assert torch.equal(train.labels, torch.from_numpy(presence[:3].astype(np.int64)))
    image = train.data["image"].float()
    assert (image[:, 2] > 180).all() and (image[:, 0] < 80).all()  # the blue centre only: the crop is central
    for i in range(3):
        text = decode_chars(train.data["text"][i])
        expected = {name.lower().replace("_", " ") for name, has in zip(CELEBA_ATTRIBUTES, presence[i]) if has}
        assert set(text.split(", ")) == expected
    assert len(load_celeba(tmp_path, "test", crop=12, size=8, checksums={})) == 2
    assert len(load_celeba(tmp_path, "train", crop=12, size=8, checksums={}, limit=2)) == 2
    again = load_celeba(tmp_path, "train", crop=12, size=8, checksums={}, seed=4)
    assert torch.equal(again.data["text"], train.data["text"])
    starts = {int((row != row[-1]).nonzero()[0]) for row in train.data["text"]}
    assert starts != {0}  # random start offsets


def test_celeba_named_errors(tmp_path: Path) -> None:
    directory, _ = _celeba(tmp_path)
    with pytest.raises(ChecksumError, match="75e246fa4810816ffd6ee81facbd244c"):
        load_celeba(tmp_path, "train", crop=12, size=8)
    (directory / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(MissingDataError, match="000002.jpg"):
        load_celeba(tmp_path, "train", crop=12, size=8, checksums={})
    face = directory / "img_align_celeba" / "000001.jpg"
    face.write_bytes(face.read_bytes()[: len(face.read_bytes()) // 2])
    with pytest.raises(TruncatedArrayError, match="000001.jpg"):
        load_celeba(tmp_path, "train", crop=12, size=8, checksums={})
    _celeba(tmp_path)
    with pytest.raises(DataFormatError, match="18x22, smaller than the 148x148 crop"):
        load_celeba(tmp_path, "train", checksums={}, limit=1)
    _celeba(tmp_path, rows=5)
    with pytest.raises(TruncatedArrayError, match="lists 5 images, its first line announces 6"):
        load_celeba(tmp_path, "train", crop=12, size=8, checksums={})
    (directory / "list_eval_partition.txt").unlink()
    with pytest.raises(MissingDataError, match="list_eval_partition.txt"):
        load_celeba(tmp_path, "train", checksums={})


# ------------------------------------------------------------------------------------------------------- CUB

CUB_IMAGES = {"train": {"001.Black_footed_Albatross": ["a.jpg", "b.jpg"], "003.Sooty_Albatross": ["c.jpg"]},
              "test": {"002.Laysan_Albatross": ["d.jpg"]}}


def _cub(root: Path) -> Path:
    """Class folders of 12x10 JPEGs (one colour per image) and ten captions per image, in the MMVAE layout."""
    directory = root / "cub"
    colour = 0
    for split, classes in CUB_IMAGES.items():
        captions = []
        for folder, names in classes.items():
            (directory / split / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                colour += 60
                image = Image.fromarray(np.full((10, 12, 3), colour, dtype=np.uint8))
                image.save(directory / split / folder / name, quality=95)
                captions += [f"this bird has a {'red' if k % 2 else 'blue'} crown and {k} wings." for k in range(10)]
        file = "text_trainvalclasses.txt" if split == "train" else "text_testclasses.txt"
        (directory / file).write_text("\n".join(captions) + "\n")
    return directory


def test_cub_in_the_batch_contract(tmp_path: Path) -> None:
    _cub(tmp_path)
    train = load_cub(tmp_path, "train", size=8)
    _check_contract(train, 30, {"image": (3, 8, 8), "caption": (32,)}, {"image": torch.uint8, "caption": torch.long})
    assert train.labels.tolist() == [0] * 20 + [2] * 10
    images = train.data["image"]
    assert torch.equal(images[0], images[9]) and not torch.equal(images[9], images[10])
    assert abs(images[10].float().mean().item() - 120) < 3  # the second image (colour 120) holds captions 10..19
    vocabulary = Vocabulary(train.metadata["vocabulary"])
    # "this bird has a red/blue crown and wings ." occur > 3 times; each digit k only 3 times: <unk>
    assert vocabulary.decode(train.data["caption"][3]) == "this bird has a red crown and <unk> wings ."
    test = load_cub(tmp_path, "test", size=8)
    assert len(test) == 10 and test.labels.tolist() == [1] * 10
    assert test.metadata["vocabulary"] == train.metadata["vocabulary"]  # built from the training captions
    caption = "This bird has a RED crown."
    assert vocabulary.decode(vocabulary.encode(caption)) == " ".join(tokenize(caption)) == "this bird has a red crown ."


def test_cub_named_errors(tmp_path: Path) -> None:
    directory = _cub(tmp_path)
    with pytest.raises(ChecksumError):
        load_cub(tmp_path, "train", size=8, checksums={"text_trainvalclasses.txt": "0" * 32})
    captions = directory / "text_testclasses.txt"
    captions.write_text("\n".join(captions.read_text().splitlines()[:7]))
    with pytest.raises(TruncatedArrayError, match="holds 7 captions, 1 images need 10"):
        load_cub(tmp_path, "test", size=8)
    captions.unlink()
    with pytest.raises(MissingDataError, match="text_testclasses.txt"):
        load_cub(tmp_path, "test", size=8)


# ------------------------------------------------------------------------------------------------------- MHD


def _mhd(path: Path, n: int = 5, n_images: int | None = None) -> torch.Tensor:
    """An MHD file: (labels, images, trajectories, sounds (N, 3, 32, 32), trajectory and sound normalisation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sounds = torch.arange(n * 3 * 32 * 32, dtype=torch.float32).reshape(n, 3, 32, 32)
    content = (
        torch.arange(n) % 10,
        torch.rand(n_images or n, 1, 28, 28),
        torch.rand(n, 200),
        sounds,
        {"min": torch.tensor(-1.0), "max": torch.tensor(1.0)},
        {"min": torch.tensor(0.0), "max": torch.tensor(3.0)},
    )
    torch.save(content, path)
    return sounds


def test_mhd_in_the_batch_contract(tmp_path: Path) -> None:
    sounds = _mhd(tmp_path / "mhd" / "mhd_train.pt")
    data = load_mhd(tmp_path, "train", modalities=("image", "trajectory", "sound", "label"))
    shapes = {"image": (1, 28, 28), "trajectory": (200,), "sound": (1, 32, 96), "label": (10,)}
    _check_contract(data, 5, shapes, dict.fromkeys(shapes, torch.float32))
    assert data.labels.tolist() == [0, 1, 2, 3, 4] and data.labels.dtype == torch.long
    assert torch.equal(data.data["label"].argmax(1), data.labels)
    # chunk c, row h, column w of a sound lands at (w, 32 c + h)
    for n, c, h, w in [(0, 0, 0, 0), (2, 1, 5, 7), (4, 2, 31, 30)]:
        assert data.data["sound"][n, 0, w, 32 * c + h] == sounds[n, c, h, w]
    assert load_mhd(tmp_path, "train").modalities == ["image", "trajectory", "sound"]


def test_mhd_named_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="mhd_test.pt"):
        load_mhd(tmp_path, "test")
    path = tmp_path / "mhd" / "mhd_test.pt"
    _mhd(path)
    with pytest.raises(ChecksumError):
        load_mhd(tmp_path, "test", checksums={"mhd_test.pt": "0" * 32})
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(TruncatedArrayError, match="mhd_test.pt"):
        load_mhd(tmp_path, "test")
    _mhd(path, n=5, n_images=4)
    with pytest.raises(TruncatedArrayError, match="different numbers of samples"):
        load_mhd(tmp_path, "test")
    torch.save({"labels": torch.zeros(3)}, path)
    with pytest.raises(DataFormatError, match="tuple"):
        load_mhd(tmp_path, "test")


# ------------------------------------------------------------------------------------------------ pyromm data


def _rats(root: Path) -> None:
    for rat in RATS:
        info_path, spike_path = rat_files(root, rat)
        info_path.parent.mkdir(parents=True)
        info = np.zeros((4, 6), dtype=np.int64)
        info[:, 3] = [1, 2, 3, 4]
        np.save(info_path, info)
        np.save(spike_path, np.ones((4, NEURONS[rat], 300), dtype=np.int16))


def test_data_list_on_a_fabricated_root(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    _rats(root)
    _celeba(root)
    _mhd(root / "mhd" / "mhd_train.pt")
    assert main(["data", "list", "--root", str(root), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out.splitlines()

    def line(text: str) -> str:
        return next(entry for entry in out if text in entry)

    assert line("rats/stella/stella_spike_data_binned.npy").split()[0] == "present"
    assert "no published md5" in line("rats/barat/barat_trial_info.npy")
    assert "MD5 MISMATCH (expected 75e246fa4810816ffd6ee81facbd244c)" in line("celeba/list_attr_celeba.txt")
    assert "6 files" in line("celeba/img_align_celeba/")
    assert line("mhd/mhd_train.pt").split()[0] == "present" and line("mhd/mhd_test.pt").split()[0] == "missing"
    assert line("svhn/train_32x32.mat").split()[0] == "missing" and line("cub/train/").split()[0] == "missing"
    assert any("Dryad doi:10.7280/D14X30" in entry for entry in out) and any("Vasco" in entry for entry in out)
    for name in MNIST_MD5:
        assert line(name).split()[0] == "missing"


def test_data_prepare_checks_and_names_what_is_missing(tmp_path: Path, capsys) -> None:
    _rats(tmp_path)
    assert main(["data", "prepare", "rats", "--root", str(tmp_path)]) == 0
    assert "rats: 64 samples of 5 rats, paired trials per odour 0..3: [1, 1, 1, 1]" in capsys.readouterr().out
    assert main(["data", "prepare", "mhd", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mhd/mhd_train.pt" in err and "nexus_pytorch" in err and len(err.strip().splitlines()) == 1
    _celeba(tmp_path)
    assert main(["data", "prepare", "celeba", "--root", str(tmp_path)]) == 1
    assert "75e246fa4810816ffd6ee81facbd244c" in capsys.readouterr().err


def test_prepare_checks_load_fabricated_datasets(tmp_path: Path, capsys) -> None:
    _celeba(tmp_path, height=218, width=178, crop=148)
    assert DATASETS["celeba"].check(tmp_path) == [
        f"celeba {split}: {n} images, 40 attributes" for split, n in (("train", 3), ("val", 1), ("test", 2))
    ]
    _cub(tmp_path)
    # vocabulary: the 3 special tokens and this, bird, has, a, blue, red, crown, and, wings, "."
    assert DATASETS["cub"].check(tmp_path) == [
        "cub train: 3 images of 2 classes, 30 captions, vocabulary 13 words",
        "cub test: 1 images of 1 classes, 10 captions, vocabulary 13 words",
    ]
    for name in ("mhd_train.pt", "mhd_test.pt"):
        _mhd(tmp_path / "mhd" / name)
    assert main(["data", "prepare", "mhd", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mhd test: 5 samples; image (1, 28, 28), trajectory (200,), sound (1, 32, 96)" in out
