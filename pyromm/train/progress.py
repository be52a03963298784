"""One progress bar per training run, counting optimizer steps and naming the run, stage and epoch."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm


class RunProgress:
    """A tqdm bar over the run's ``total`` optimizer steps (``done`` of them already taken, ``steps_per_epoch``
    a full epoch), updated in place.

    Its description reads ``"<run> | <stage> | epoch e/E"`` (without the run part when ``run`` is None).
    """

    def __init__(
        self, run: str | None, total: int, done: int, total_epochs: int, steps_per_epoch: int, enabled: bool
    ) -> None:
        self.run = run
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.bar = tqdm(total=total, initial=done, desc=run, disable=not enabled, dynamic_ncols=True)

    def describe(self, stage: str, epoch: int) -> str:
        parts = [self.run] if self.run else []
        return " | ".join([*parts, stage, f"epoch {epoch}/{self.total_epochs}"])

    @contextmanager
    def epoch(self, stage: str, epoch: int) -> Iterator[tqdm]:
        """The bar, described as epoch ``epoch`` of ``stage`` for the duration."""
        self.bar.set_description(self.describe(stage, epoch), refresh=False)
        yield self.bar

    def skip_epochs(self, epochs: int) -> None:
        """Take the steps of ``epochs`` epochs that will not run (a stopped stage's) off the total."""
        if epochs:
            self.bar.total -= epochs * self.steps_per_epoch
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
