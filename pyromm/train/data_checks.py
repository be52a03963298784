"""Checks of the data a model is about to train on, beyond the dataset's own contract.

The dataset must hold every modality the model has (``model.modality_names``), each observed in at least one
training sample, and floating-point data must have the model's dtype: float64 data (numpy's default) for a
float32 model is cast, with a warning naming the modality.
"""
from __future__ import annotations

import warnings

from torch import nn

from pyromm.data.dataset import DataValidationError, MultimodalDataset


def check_training_data(model: nn.Module, data: MultimodalDataset, split: str) -> MultimodalDataset:
    """``data`` checked against ``model`` (``split`` names it in errors: "train", "validation"), cast to the
    model's floating-point dtype. Modalities never observed are an error in the "train" split only."""
    names = getattr(model, "modality_names", None)
    if names is not None:
        missing = [name for name in names if name not in data.data]
        if missing:
            raise DataValidationError(
                f"the model has modality {missing[0]!r}, but the {split} split has no such modality (it has "
                f"{data.modalities}); give the model only the dataset's modalities"
            )
    if split == "train" and data.mask is not None:
        for name, observed in data.mask.items():
            if not bool(observed.any()):
                raise DataValidationError(
                    f"modality {name!r} is never observed in the {split} split (its mask is all False), so nothing "
                    "could learn it; drop it from the model and the data, or observe it in some samples"
                )
    return _cast_to_model_dtype(model, data, split)


def _cast_to_model_dtype(model: nn.Module, data: MultimodalDataset, split: str) -> MultimodalDataset:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    cast = [name for name, x in data.data.items() if x.is_floating_point() and dtype is not None and x.dtype != dtype]
    if not cast:
        return data
    for name in cast:
        warnings.warn(
            f"modality {name!r} of the {split} split is {data.data[name].dtype} but the model is {dtype}; casting it to "
            f"{dtype} (pass {dtype} data to silence this warning)",
            stacklevel=4,
        )
    out = data.to(data.device)
    out.data = {name: x.to(dtype) if name in cast else x for name, x in out.data.items()}
    return out
