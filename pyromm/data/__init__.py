"""Multimodal data: the batch contract, in-memory datasets and the built-in datasets."""
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import DataValidationError, MultimodalDataset

__all__ = ["MultimodalBatch", "MultimodalDataset", "DataValidationError"]
