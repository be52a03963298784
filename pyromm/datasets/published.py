"""The base of the datasets read from their publishers' files, which :mod:`pyromm.data.published` names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pyromm.data.published import prepare
from pyromm.datasets.steps import published_lines
from pyromm.datasets.dataset import Dataset


class PublishedFormat(Dataset):
    """A dataset whose files ``pyromm.data.published.DATASETS[name]`` lists: ``prepare`` checks them, downloading
    those with an official URL and md5, and ``describe`` shows each as present or missing."""

    def prepare(self, options: Any, root: Path, cache: Path) -> None:
        """Verify the published md5s, download the files that have an official URL, name any other missing file and
        where to get it, then check that the dataset loads."""
        prepare(self.name, root)

    def describe(self, root: Path, cache: Path) -> list[str]:
        return published_lines(self.name, root)
