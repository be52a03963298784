"""Per-epoch metrics of a run, kept as ``metrics.jsonl`` (source of truth) and ``metrics.csv``; JSON-lines reading."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from pyromm.files import atomic_open


class MetricsLog:
    """Rows of per-epoch metrics (each with an integer ``"epoch"``) appended to the run directory.

    The CSV header comes from the first row; a later row with new keys appends them as new columns, so
    existing columns never move. Both files are rewritten atomically on every change.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict[str, Any]]:
        """Every logged row; a partial last line (a crash mid-write) is ignored."""
        return read_jsonl(self.jsonl_path)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one epoch's row to both files (each rewritten atomically)."""
        rows = [*self.read(), dict(row)]
        self._write_jsonl(rows)
        self._write_csv(rows)

    def truncate(self, last_epoch: int) -> list[dict[str, Any]]:
        """Drop the rows of epochs after ``last_epoch`` from both files; return the rows kept."""
        rows = [row for row in self.read() if int(row["epoch"]) <= last_epoch]
        self._write_jsonl(rows)
        self._write_csv(rows)
        return rows

    def _write_jsonl(self, rows: Iterable[Mapping[str, Any]]) -> None:
        with atomic_open(self.jsonl_path, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    def _write_csv(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        header: list[str] = []
        for row in rows:
            header.extend(key for key in row if key not in header)
        with atomic_open(self.csv_path, "w", newline="") as handle:
            if header:
                writer = csv.DictWriter(handle, header, restval="")
                writer.writeheader()
                writer.writerows(rows)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON rows of a JSON-lines file ([] when it does not exist); a partial last line (a crash mid-write)
    is ignored, an invalid line before it raises ``ValueError`` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path} line {i + 1} is not valid JSON") from None
    return rows
