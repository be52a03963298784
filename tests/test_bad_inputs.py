"""Every bad input gets an error naming the field, modality, split or path; the CLI reports each in one line."""
import errno
import os
import warnings

import pytest
import torch

from pyromm.cli import main
from pyromm.data import DataValidationError, MultimodalDataset
from pyromm.evaluation.classifiers import train_modality_classifiers
from pyromm.files import DiskFullError
from pyromm.infer import RateELBO
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, MultimodalVAE
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Trainer

TINY = ["--set", "dataset=\"digits\"", "--set", "num_views=2", "--set", "hidden=[8]", "--set", "latent_dim=2",
        "--set", "train_limit=64", "--set", "batch_size=32", "--set", "epochs=1"]


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train_limit=-5", "train_limit must be >= 1 (or null for all samples), got -5"),
        ("classifier_epochs=0", "classifier_epochs must be >= 1, got 0"),
        ("alpha=0.5", "'alpha' is an option of methods mmvm, mvtcae, jmvae, not of model 'independent' or dataset "
                      "'digits', which would ignore it: remove alpha"),
        ('hidden=["a"]', "hidden must be a list of integer layer sizes >= 1, got ['a']"),
        ("hidden=[1.5]", "hidden must be a list of integer layer sizes >= 1, got [1.5]"),
        ("device=banana", "device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'banana'"),
        ("beta=NaN", "beta must be a finite number, got nan"),
        ("seed=-1", "seed must be an integer in [0, 4294967295], got -1"),
    ],
)
def test_bad_config_values_name_the_field(setting, message, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--set", "model=independent", "--set", setting]) == 2
    assert capsys.readouterr().err == f"pyromm: error: config error: {message}\n"


@pytest.mark.parametrize("mask, shown", [(torch.full((8,), 0.3), "torch.float32 values such as 0.30000001192092896"),
                                         (torch.full((8,), 2), "torch.int64 values such as 2")])
def test_masks_must_be_boolean(mask, shown):
    with pytest.raises(DataValidationError) as err:
        MultimodalDataset({"a": torch.zeros(8, 2), "b": torch.zeros(8, 2)}, mask={"b": mask})
    assert str(err.value) == f"mask of modality 'b' must be boolean (True = observed) or 0/1, got {shown}"
    ok = MultimodalDataset({"a": torch.zeros(8, 2), "b": torch.zeros(8, 2)}, mask={"b": torch.tensor([1, 0] * 4)})
    assert ok.mask["b"].dtype == torch.bool and ok.mask["b"].tolist() == [True, False] * 4


def vae(names=("a", "b"), seed=0):
    torch.manual_seed(seed)
    return MultimodalVAE([Modality(m, MLPEncoder(3, 2, hidden=(8,)), MLPDecoder(2, 3, hidden=(8,)), Laplace(1), (3,))
                          for m in names], latent_dim=2)


def fit(model, data):
    return Trainer(model, RateELBO(), epochs=1, batch_size=8, progress=False).fit(data)


def data(n=16, **mask):
    g = torch.Generator().manual_seed(1)
    return MultimodalDataset({m: torch.randn(n, 3, generator=g) for m in ("a", "b")}, mask=mask or None)


def test_modalities_missing_from_the_data_or_never_observed_are_refused():
    with pytest.raises(DataValidationError) as err:
        fit(vae(("a", "b", "c")), data())
    assert str(err.value) == ("the model has modality 'c', but the train split has no such modality (it has "
                              "['a', 'b']); give the model only the dataset's modalities")
    with pytest.raises(DataValidationError) as err:
        fit(vae(), data(b=torch.zeros(16, dtype=torch.bool)))
    assert str(err.value) == ("modality 'b' is never observed in the train split (its mask is all False), so nothing "
                              "could learn it; drop it from the model and the data, or observe it in some samples")


def test_float64_data_is_cast_with_a_warning_naming_the_modality():
    float32 = data()
    float64 = MultimodalDataset({"a": float32.data["a"].double(), "b": float32.data["b"]})
    reference, model = vae(), vae()
    fit(reference, float32)
    with pytest.warns(UserWarning) as caught:
        fit(model, float64)
    assert [str(w.message) for w in caught] == [
        "modality 'a' of the train split is torch.float64 but the model is torch.float32; casting it to torch.float32 "
        "(pass torch.float32 data to silence this warning)"
    ]
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), model.parameters()))


def test_a_classifier_cache_that_fails_to_load_is_retrained_after_a_warning_naming_the_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    split = MultimodalDataset({"a": torch.randn(40, 3, generator=g) + labels[:, None].float()}, labels)
    options = dict(epochs=2, device="cpu", seed=0, cache_dir=tmp_path, cache_key="k")
    first, accuracy = train_modality_classifiers(split, split, **options)
    weights = tmp_path / "classifier_a.pt"
    weights.write_bytes(b"not a state dict")
    with pytest.warns(UserWarning) as caught:
        again, retrained = train_modality_classifiers(split, split, **options)
    assert len(caught) == 1 and str(caught[0].message).startswith(f"classifier cache {weights} cannot be loaded (")
    assert str(caught[0].message).endswith("); retraining the 'a' classifier and replacing it")
    assert retrained == accuracy
    assert all(torch.equal(p, q) for p, q in zip(first["a"].parameters(), again["a"].parameters()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_modality_classifiers(split, split, **options)[1] == accuracy  # the rewritten cache loads


def test_cli_reports_divergence_in_one_line(tmp_path, capsys, restore_torch_threads):
    args = ["train", "--out", str(tmp_path), "--no-eval", "--no-progress", "--threads", "1", *TINY, "--set", "lr=1e30"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("pyromm: error: ValueError: step 1 (epoch 1, stage 'train'): Expected parameter locs")
    assert err.endswith("(Pyro's validation; after a diverging update, try a lower learning rate) "
                        "(run with --debug for the traceback)\n")


def test_cli_reports_divergence_without_validation_in_one_line(tmp_path, capsys, restore_torch_threads):
    args = ["train", "--out", str(tmp_path), "--no-eval", "--no-progress", "--threads", "1", *TINY, "--set", "lr=1e30",
            "--set", "pyro_validation=false"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("pyromm: error: training diverged: non-finite loss and gradient at step 1 (epoch 1, stage "
                          "'train'); loss nan, non-finite terms: ")
    assert "rec/m0" in err and err.endswith("(try a lower learning rate, or --set on_nonfinite=skip)\n")


def test_cli_reports_a_full_disk_in_one_line_naming_the_path(tmp_path, capsys, monkeypatch, restore_torch_threads):
    real_replace = os.replace

    def full_at_metrics(src, dst):
        if str(dst).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("pyromm.files.os.replace", full_at_metrics)
    args = ["train", "--out", str(tmp_path), "--no-eval", "--no-progress", "--threads", "1", *TINY]
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"pyromm: error: disk full: cannot write {tmp_path / 'metrics.jsonl'} (No space left on device while writing "
        "(the previous file, if any, is kept)); free some space and run again\n"
    )
    with pytest.raises(DiskFullError):  # --debug: the exception itself, for its traceback
        main(["--debug", *args])
    assert not (tmp_path / "metrics.jsonl").exists() and not list(tmp_path.glob(".*.tmp"))
