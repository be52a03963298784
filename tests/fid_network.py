"""A small feature network for FID tests, importable as ``fid_network:small_features``."""
import torch
from torch import nn


def small_features() -> nn.Module:
    """3 channels → 8 pooled conv features (the role Inception's 2048 pooled features play)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.Tanh(), nn.AdaptiveAvgPool2d(1))
