"""Text modalities: character and word encodings round-trip, named errors, 1-D conv networks, likelihood weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyromm.data import MultimodalDataset
from pyromm.data.text import (
    CELEBA_ALPHABET,
    UnknownCharacterError,
    Vocabulary,
    attribute_text,
    decode_chars,
    encode_chars,
    random_offset,
    tokenize,
)
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.models import MMVMPrior, MultimodalVAE
from pyromm.nn.text import TextConvDecoder, TextConvEncoder, size_weight, text_modality

TEXT = 'smiling, wavy hair, "5 o clock shadow"\nyoung'


def test_alphabet_has_41_symbols() -> None:
    assert len(CELEBA_ALPHABET) == len(set(CELEBA_ALPHABET)) == 41


@pytest.mark.parametrize("offset", [0, 17, 256 - len(TEXT)])
def test_characters_round_trip(offset: int) -> None:
    codes = encode_chars(TEXT, offset=offset)
    assert codes.dtype == torch.long and codes.shape == (256,)
    pad = CELEBA_ALPHABET.index("*")
    assert (codes[:offset] == pad).all() and (codes[offset + len(TEXT) :] == pad).all()
    assert codes[offset].item() == CELEBA_ALPHABET.index("s")
    assert decode_chars(codes) == TEXT


def test_unknown_character_is_a_named_error() -> None:
    with pytest.raises(UnknownCharacterError) as info:
        encode_chars("blond hair, Smiling")
    assert isinstance(info.value, ValueError)
    assert "'S'" in str(info.value) and "position 12" in str(info.value)


def test_text_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_chars("abc", length=4, offset=2)


def test_attribute_text_drops_absent_and_shuffles() -> None:
    names = ["5_o_Clock_Shadow", "Bald", "Wavy_Hair", "Young"]
    present = [True, False, True, True]
    assert attribute_text(names, present) == "5 o clock shadow, wavy hair, young"
    orders = {attribute_text(names, present, np.random.default_rng(seed)) for seed in range(20)}
    assert len(orders) > 1 and all("bald" not in text for text in orders)
    assert all(sorted(text.split(", ")) == ["5 o clock shadow", "wavy hair", "young"] for text in orders)
    offsets = {random_offset(250, 256, np.random.default_rng(seed)) for seed in range(50)}
    assert offsets <= set(range(7)) and len(offsets) > 1
    assert random_offset(300, 256, np.random.default_rng(0)) == 0


def test_words_round_trip_and_vocabulary() -> None:
    captions = ["This bird has a red crown.", "this bird has a red belly.", "this bird is red,", "a red bird has wings."]
    assert tokenize(captions[0]) == ["this", "bird", "has", "a", "red", "crown", "."]
    vocabulary = Vocabulary.build(captions, min_count=2)
    # counts: this 3, bird 4, has 3, a 3, red 4, "." 3; crown, belly, is, ",", wings once: left out
    assert vocabulary.words == ["<pad>", "<unk>", "<eos>", "this", "bird", "has", "a", "red", "."]
    codes = vocabulary.encode("this red bird has a red bird .")
    assert codes.dtype == torch.long and codes.shape == (32,)
    assert codes[:9].tolist() == [3, 7, 4, 5, 6, 7, 4, 8, Vocabulary.EOS] and (codes[9:] == Vocabulary.PAD).all()
    assert vocabulary.decode(codes) == "this red bird has a red bird ."
    assert vocabulary.decode(vocabulary.encode("this bird has a crown.")) == "this bird has a <unk> ."
    long = vocabulary.encode(" ".join(["bird"] * 40))
    assert long[-1].item() == Vocabulary.EOS and vocabulary.decode(long) == " ".join(["bird"] * 31)
    assert vocabulary.encode_all(captions).shape == (4, 32)


def test_conv_networks_give_categorical_logits() -> None:
    encoder, decoder = TextConvEncoder(256, 41, 8), TextConvDecoder(8, 256, 41)
    x = torch.randint(0, 41, (5, 256))
    loc, log_var = encoder(x)
    assert loc.shape == log_var.shape == (5, 8)
    assert decoder(loc).shape == (5, 256, 41)
    with pytest.raises(ValueError, match="divisible"):
        TextConvEncoder(30, 41, 8)


def test_likelihood_weights_follow_the_reference() -> None:
    assert size_weight(64 * 64) == 1.0 and size_weight(256) == 16.0 and size_weight(32) == 128.0
    text = text_modality("text", 256, 41, latent_dim=4, channels=(16, 32))
    caption = text_modality("caption", 32, 50, latent_dim=4, channels=(16, 32))
    assert text.weight == 16.0 and caption.weight == 128.0
    assert text.likelihood.num_classes == 41 and text.event_shape == (256,)


def test_text_modality_trains_in_a_model() -> None:
    torch.manual_seed(0)
    modalities = [
        text_modality("text", 32, 41, 4, channels=(8, 16)),
        text_modality("caption", 32, 20, 4, channels=(8, 16)),
    ]
    model = MultimodalVAE(modalities, 4, conditional_prior=MMVMPrior(0.0))
    data = MultimodalDataset({"text": torch.randint(0, 41, (6, 32)), "caption": torch.randint(0, 20, (6, 32))})
    batch = data.batch(slice(0, 6))
    model.check_batch(batch)
    out = ELBOObjective(RateELBO("jensen"))(model, batch, {"beta": 1.0})
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
