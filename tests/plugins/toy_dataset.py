"""A dataset added in one file: two views x_m = A_m z + b_m + ε of a 2-d Gaussian latent, labelled by the sign of
z_0."""
from dataclasses import dataclass

from pyromm.data import LinearGaussianMultimodal, MultimodalDataset
from pyromm.datasets import Dataset, register_dataset
from pyromm.options import option


@dataclass(frozen=True)
class LinearViewsOptions:
    num_samples: int = option(400, "samples, the last quarter of them the test split")
    noise: float = option(0.1, "standard deviation of ε")


class LinearViews(Dataset):
    name = "toy_linear_views"
    doc = "two linear-Gaussian views of a 2-d latent, labelled by the sign of its first coordinate"
    Options = LinearViewsOptions

    def load(self, cfg):
        source = LinearGaussianMultimodal(2, {"a": 5, "b": 3}, noise=cfg.noise, seed=0)
        data, z = source.sample(cfg.num_samples, return_latent=True)
        labelled = MultimodalDataset(data.data, labels=(z[:, 0] > 0).long())
        cut = cfg.num_samples * 3 // 4
        return labelled.subset(slice(0, cut)), labelled.subset(slice(cut, cfg.num_samples))


register_dataset(LinearViews())
