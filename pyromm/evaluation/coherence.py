"""Coherence of conditionally generated modalities, judged by pre-trained classifiers (MMVM paper, B.2.2)."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Mapping, Sequence

import torch
from torch import nn

from pyromm.contracts import InferenceModel
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import class_labels, evaluating
from pyromm.evaluation.reconstruction import distribution_mean, observed_all, seeded


def pair_key(source: str, target: str) -> str:
    """The JSON key of the (source, target) pair: ``"source->target"``."""
    return f"{source}->{target}"


def generation_accuracy(
    model: InferenceModel,
    test: MultimodalDataset,
    classifiers: Mapping[str, nn.Module],
    pairs: Sequence[tuple[tuple[str, ...], str]],
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[tuple[tuple[str, ...], str], float | None]:
    """acc[(S, m)] = mean_i [argmax f_m(E p(x_m | z)) = y_i], z ~ ``model.infer(X_S^i, S)`` drawn afresh per target,
    over the test samples i that observe every modality of S (None when there are none)."""
    class_labels(test)
    missing = sorted({t for _, t in pairs} - set(classifiers))
    if missing:
        raise KeyError(f"no classifier for modality {missing[0]!r}; classifiers cover {sorted(classifiers)}")
    targets: dict[tuple[str, ...], list[str]] = {}
    for subset, target in pairs:
        targets.setdefault(tuple(subset), []).append(target)
    correct = {(s, t): torch.zeros((), dtype=torch.long, device=test.device) for s, ts in targets.items() for t in ts}
    totals = {s: 0 for s in targets}
    with ExitStack() as stack:
        for module in (model, *classifiers.values()):
            stack.enter_context(evaluating(module))
        stack.enter_context(seeded(generator, test.device))
        for batch in test.batches(batch_size):
            for subset, subset_targets in targets.items():
                conditioning = observed_all(batch, subset)
                if conditioning.batch_size == 0:
                    continue
                posterior = model.infer(conditioning, list(subset))
                for target in subset_targets:
                    generated = distribution_mean(model.decode(target, posterior.sample()))
                    predicted = classifiers[target](generated).argmax(-1)
                    correct[subset, target] += (predicted == conditioning.labels).sum()
                totals[subset] += conditioning.batch_size
    return {(s, t): int(c) / totals[s] if totals[s] else None for (s, t), c in correct.items()}


def coherence(
    model: InferenceModel,
    test: MultimodalDataset,
    classifiers: Mapping[str, nn.Module],
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict:
    """Accuracy of the target classifier on samples generated from each source modality.

    For every source m and target m̃ (m̃ = m included) and every test sample i observing m:
    z ~ ``model.infer(x_m^i, [m])`` (a fresh sample per target), x̂ = E[p(x_m̃ | z)] (``model.decode(m̃, z)``),
    ``pair["m->m̃"]`` = mean_i [argmax f_m̃(x̂) = y_i]. ``cross`` = mean over m ≠ m̃ (None with one modality),
    ``self`` = mean over m = m̃, ``by_source[m]`` = mean over m̃ ≠ m (None with one modality).
    """
    names = list(model.modality_names)
    accuracy = generation_accuracy(
        model, test, classifiers, [((s,), t) for s in names for t in names], batch_size=batch_size, generator=generator
    )
    pair = {(s[0], t): v for (s, t), v in accuracy.items()}
    cross = [v for (s, t), v in pair.items() if s != t and v is not None]
    same = [v for (s, t), v in pair.items() if s == t and v is not None]
    by_source = {}
    for source in names:
        values = [v for (s, t), v in pair.items() if s == source and t != source and v is not None]
        by_source[source] = sum(values) / len(values) if values else None
    return {
        "pair": {pair_key(s, t): v for (s, t), v in pair.items()},
        "cross": sum(cross) / len(cross) if cross else None,
        "self": sum(same) / len(same) if same else None,
        "by_source": by_source,
    }

