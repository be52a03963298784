"""Datasets are validated at the boundary, each fault with the exact message naming what is wrong."""
import re

import pytest
import torch

from pyromm.data import DataValidationError, MultimodalDataset
from pyromm.evaluation import latent_classification


def message(text):
    return f"^{re.escape(text)}$"


def test_nan_or_inf_names_the_modality_and_the_first_sample():
    x = torch.zeros(6, 2)
    x[4, 1] = float("inf")
    with pytest.raises(DataValidationError, match=message("modality 'b' contains NaN or inf (first at sample 4)")):
        MultimodalDataset({"a": torch.zeros(6, 2), "b": x})


def test_mismatched_lengths_are_named():
    text = "modality 'b' has 5 samples, expected 6 ({'a': 6, 'b': 5})"
    with pytest.raises(DataValidationError, match=message(text)):
        MultimodalDataset({"a": torch.zeros(6, 2), "b": torch.zeros(5, 2)})


def test_labels_of_the_wrong_length_are_named():
    with pytest.raises(DataValidationError, match=message("labels have 4 entries, expected 6")):
        MultimodalDataset({"a": torch.zeros(6, 2)}, labels=torch.zeros(4, dtype=torch.long))


def test_a_sample_with_every_modality_missing_is_named():
    mask = {"a": torch.tensor([True, False, True]), "b": torch.tensor([True, False, False])}
    with pytest.raises(DataValidationError, match=message("sample 1 has every modality masked (no observed modality)")):
        MultimodalDataset({"a": torch.zeros(3, 2), "b": torch.zeros(3, 2)}, mask=mask)


def test_mask_faults_are_named():
    with pytest.raises(DataValidationError, match=message("mask of modality 'a' has shape (2,), expected (3,)")):
        MultimodalDataset({"a": torch.zeros(3, 2)}, mask={"a": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(DataValidationError, match=r"^mask names unknown modality 'c'; modalities are \['a'\]$"):
        MultimodalDataset({"a": torch.zeros(3, 2)}, mask={"c": torch.ones(3, dtype=torch.bool)})


def test_empty_dataset_is_named():
    with pytest.raises(DataValidationError, match=message("dataset is empty (0 samples)")):
        MultimodalDataset({"a": torch.zeros(0, 2)})
    with pytest.raises(DataValidationError, match=message("dataset has no modalities")):
        MultimodalDataset({})


def test_evaluation_without_labels_is_named():
    data = MultimodalDataset({"a": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match=message("evaluation needs a dataset with labels, got labels=None")):
        latent_classification(None, data, data)
