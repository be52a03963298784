"""The contracts between a model and the rest of pyromm, as ``typing.Protocol``s.

* :class:`InferenceModel`: what training and evaluation call on every model (its Pyro programs, its posteriors
  and decoders, its input checks). Every built-in model follows it; so must a user's model to be trained by the
  ``Trainer`` and scored by ``pyromm.evaluation``.
* :class:`UnconditionalPrior`: the optional prior p(z) of the latent ``infer`` returns, for models that have one;
  evaluation uses it for joint coherence (``sample_prior``) and the importance-sampled log-likelihood
  (``prior``). Models whose prior depends on the data (the MMVM VAE) do not follow it.
* ``ConditionalPrior`` (``pyromm.models.multimodal_vae``): the per-modality prior h(z_m | ·) of
  ``MultimodalVAE``, called as ``prior(posteriors, batch, hyper)``.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

from torch import Tensor
from torch.distributions import Distribution

from pyromm.data.batch import MultimodalBatch
from pyromm.models.multimodal_vae import ConditionalPrior

__all__ = ["ConditionalPrior", "InferenceModel", "UnconditionalPrior"]


@runtime_checkable
class InferenceModel(Protocol):
    """A multimodal model: Pyro programs for training, posteriors and decoders for evaluation.

    * ``model(batch, hyper)`` / ``guide(batch, hyper)``: the model as a pair of Pyro programs following the site
      conventions of ``docs/objectives.md``; ``hyper`` holds the schedule values (``beta``, ...).
    * ``encode(batch)``: q_m(z | x_m) of each modality present; ``.mean`` is the latent representation.
    * ``infer(batch, subset)``: q(z | X_S), over a latent every decoder accepts; q_m(z | x_m) for |S| = 1.
    * ``decode(name, z)``: p(x_name | z) for z of shape ``(*sample, B, D)``.
    * ``reconstruct(batch)``: p(x_m | z) of each modality, z from the model's posterior given the whole batch.
    * ``check_batch(batch)``: a named error for unknown modalities, bad shapes, dtypes or values, and samples with
      every modality masked.
    """

    @property
    def modality_names(self) -> list[str]: ...

    def encode(self, batch: MultimodalBatch) -> Mapping[str, Distribution]: ...

    def infer(self, batch: MultimodalBatch, subset: Sequence[str]) -> Distribution: ...

    def decode(self, name: str, z: Tensor) -> Distribution: ...

    def reconstruct(self, batch: MultimodalBatch) -> Mapping[str, Distribution]: ...

    def check_batch(self, batch: MultimodalBatch) -> None: ...

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None: ...

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None: ...


@runtime_checkable
class UnconditionalPrior(Protocol):
    """p(z) of the latent ``infer`` returns: ``prior(batch)`` with batch shape ``(B,)`` and a ``log_prob``;
    ``sample_prior(n)`` n draws ``(n, D)`` on the model's device, which every decoder accepts."""

    def prior(self, batch: MultimodalBatch) -> Distribution: ...

    def sample_prior(self, n: int) -> Tensor: ...
