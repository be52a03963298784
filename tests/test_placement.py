"""Training data resident on the device when they fit, batches moved one at a time otherwise."""
import torch

from pyromm.data import MultimodalDataset
from pyromm.train import placement
from pyromm.train.placement import batch_to, dataset_nbytes, resident, same_device


def images(n: int = 10) -> MultimodalDataset:
    return MultimodalDataset(
        {"a": torch.zeros(n, 1, 4, 4, dtype=torch.uint8), "b": torch.zeros(n, 3)},
        labels=torch.zeros(n, dtype=torch.long),
        mask={"b": torch.ones(n, dtype=torch.bool)},
    )


def test_nbytes_counts_data_masks_and_labels():
    assert dataset_nbytes(images()) == 10 * 16 * 1 + 10 * 3 * 4 + 10 * 8 + 10 * 1


def test_cpu_is_a_no_op():
    data = images()
    assert resident(data, torch.device("cpu"), 0.5) is data
    batch = data.batch(slice(0, 4))
    assert batch_to(batch, torch.device("cpu")) is batch


def test_cuda_keeps_the_data_on_the_host_unless_they_fit(monkeypatch):
    data, moved = images(), []
    monkeypatch.setattr(data, "to", lambda device: moved.append(device) or "on device")
    cuda = torch.device("cuda")
    monkeypatch.setattr(placement, "free_memory", lambda device: 2 * dataset_nbytes(data) - 1)
    assert resident(data, cuda, 0.5) is data and moved == []
    monkeypatch.setattr(placement, "free_memory", lambda device: 2 * dataset_nbytes(data))
    assert resident(data, cuda, 0.5) == "on device" and moved == [cuda]


def test_devices_without_a_memory_query_get_the_data_moved():
    data = images()
    on_meta = resident(data, torch.device("meta"), 0.5)
    assert on_meta.device.type == "meta" and on_meta.mask["b"].device.type == "meta"
    moved = batch_to(data.batch(slice(0, 4)), torch.device("meta"))
    assert moved.data["a"].device.type == "meta" and moved.labels.device.type == "meta"


def test_same_device_treats_a_missing_index_as_the_current_device():
    assert same_device(torch.device("cuda", 0), torch.device("cuda"))
    assert not same_device(torch.device("cuda", 0), torch.device("cuda", 1))
    assert not same_device(torch.device("cpu"), torch.device("cuda"))
