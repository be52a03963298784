"""Text modalities as integer sequences: CelebA attribute strings (characters) and CUB captions (words).

Characters (bimodal CelebA, Sutter et al. 2020; MMVM App. B.5 and Fig. 13). Alphabet of 41 symbols:
``a-z``, ``0-9``, ``,``, ``"``, space, ``*`` (padding) and newline. The attribute string joins, with ", ",
the names of the attributes an image has (lower case, "_" read as a space) in a random order; absent
attributes are left out. It is written into 256 positions of padding symbols from a random start offset
s ~ U{0, ..., 256 − len}; a longer string is cut to 256 characters.

Words (CUB captions, Shi et al. 2019, as in the MMVAE code). A caption is split into lower-case words
(runs of letters and digits) and single punctuation marks, cut to 31 tokens, ended with ``<eos>`` and
padded with ``<pad>`` to 32. The vocabulary holds ``<pad>``, ``<unk>``, ``<eos>`` and then, in order of
first appearance, the words seen more than 3 times in the training captions; other words read as ``<unk>``.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

CELEBA_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789,\" *\n"
PAD_CHAR = "*"
CELEBA_TEXT_LENGTH = 256
CAPTION_LENGTH = 32
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
MIN_COUNT = 3
_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


class UnknownCharacterError(ValueError):
    """A text holds a character outside the alphabet."""


def encode_chars(
    text: str, length: int = CELEBA_TEXT_LENGTH, offset: int = 0, alphabet: str = CELEBA_ALPHABET, pad: str = PAD_CHAR
) -> Tensor:
    """``(length,)`` long: the alphabet indices of ``text`` written from position ``offset`` into a row of ``pad``."""
    if offset < 0 or offset + len(text) > length:
        raise ValueError(f"a text of {len(text)} characters at offset {offset} does not fit in {length} positions")
    index = {char: i for i, char in enumerate(alphabet)}
    codes = [index.get(char, -1) for char in text]
    if -1 in codes:
        position = codes.index(-1)
        raise UnknownCharacterError(
            f"character {text[position]!r} at position {position} of {text!r} is not in the alphabet {alphabet!r}"
        )
    out = torch.full((length,), index[pad], dtype=torch.long)
    out[offset : offset + len(text)] = torch.tensor(codes, dtype=torch.long)
    return out


def decode_chars(codes: Tensor | Sequence[int], alphabet: str = CELEBA_ALPHABET, pad: str = PAD_CHAR) -> str:
    """The text of ``codes`` without the padding around it: ``decode_chars(encode_chars(s, offset=k)) == s``
    for every s that neither starts nor ends with the padding symbol."""
    return "".join(alphabet[int(i)] for i in codes).strip(pad)


def attribute_text(names: Sequence[str], present: Sequence[bool], rng: np.random.Generator | None = None) -> str:
    """The present attributes' names, lower case with "_" → " ", joined by ", "; shuffled by ``rng`` unless None."""
    words = [name.lower().replace("_", " ") for name, has in zip(names, present) if has]
    if rng is not None:
        words = [words[i] for i in rng.permutation(len(words))]
    return ", ".join(words)


def random_offset(text_length: int, length: int, rng: np.random.Generator) -> int:
    """A start offset drawn uniformly from 0..length − text_length (0 when the text fills the row)."""
    return int(rng.integers(0, max(length - text_length, 0) + 1))


def tokenize(caption: str) -> list[str]:
    """Lower-case words (letters and digits) and single punctuation marks, in order."""
    return _TOKEN.findall(caption.lower())


class Vocabulary:
    """Word ↔ index; indices 0, 1, 2 are ``<pad>``, ``<unk>``, ``<eos>``."""

    PAD, UNK, EOS = 0, 1, 2

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {list(words[:3])}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be distinct")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = MIN_COUNT) -> "Vocabulary":
        """The special tokens, then the words occurring more than ``min_count`` times, by first appearance."""
        counts: dict[str, int] = {}
        for caption in captions:
            for word in tokenize(caption):
                counts[word] = counts.get(word, 0) + 1
        return cls([*SPECIAL_TOKENS, *(word for word, n in counts.items() if n > min_count)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str, length: int = CAPTION_LENGTH) -> Tensor:
        """``(length,)`` long: the first length − 1 tokens (unknown words → ``<unk>``), ``<eos>``, ``<pad>``s."""
        ids = [self.index.get(word, self.UNK) for word in tokenize(caption)[: length - 1]] + [self.EOS]
        return torch.tensor(ids + [self.PAD] * (length - len(ids)), dtype=torch.long)

    def encode_all(self, captions: Iterable[str], length: int = CAPTION_LENGTH) -> Tensor:
        """``(N, length)`` long, one row per caption."""
        return torch.stack([self.encode(caption, length) for caption in captions])

    def decode(self, codes: Tensor | Sequence[int]) -> str:
        """The words before the first ``<eos>``, ``<pad>``s left out, joined by spaces."""
        words = []
        for code in (int(c) for c in codes):
            if code == self.EOS:
                break
            if code != self.PAD:
                words.append(self.words[code])
        return " ".join(words)
