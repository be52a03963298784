"""The built-in models follow the declared contracts (pyromm.contracts)."""
from __future__ import annotations

import pytest

from pyromm.contracts import ConditionalPrior, InferenceModel, UnconditionalPrior
from pyromm.likelihoods import Laplace
from pyromm.models import MMVAE, MMVAEPlus, MMVMPrior, MVAE, MVTCAE, Modality, SharedLatentVAE, mmvm_vae, standard_normal
from pyromm.nn import MLPDecoder, MLPEncoder


def modalities(latent_dim: int = 2):
    return [
        Modality(n, MLPEncoder((4,), latent_dim, hidden=(8,)), MLPDecoder(latent_dim, (4,), hidden=(8,)), Laplace(1), (4,))
        for n in ("a", "b")
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: SharedLatentVAE(modalities(), 2, "mopoe"),
        lambda: MVAE(modalities(), 2),
        lambda: MVTCAE(modalities(), 2),
        lambda: MMVAE(modalities(), 2),
        lambda: MMVAEPlus(modalities(3), 2, 1),
    ],
)
def test_shared_latent_models_have_the_inference_contract_and_an_unconditional_prior(build):
    model = build()
    assert isinstance(model, InferenceModel)
    assert isinstance(model, UnconditionalPrior)


def test_a_data_dependent_prior_model_has_the_inference_contract_only():
    model = mmvm_vae(modalities(), 2)
    assert isinstance(model, InferenceModel)
    assert not isinstance(model, UnconditionalPrior)
    assert isinstance(model.conditional_prior, ConditionalPrior)
    assert isinstance(standard_normal, ConditionalPrior) and isinstance(MMVMPrior(0.5), ConditionalPrior)


def test_an_object_without_the_programs_is_not_an_inference_model():
    class EncoderOnly:
        modality_names = ["a"]

        def encode(self, batch):
            return {}

    assert not isinstance(EncoderOnly(), InferenceModel)
