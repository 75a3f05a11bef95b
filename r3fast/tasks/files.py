"""Dataset rows from JSON, JSONL and parquet files (or an in-memory dataset), each tagged with
where it came from, so a malformed row is reported as `file:line` and not as a bare KeyError.

Formats, by file name:
    .jsonl / .ndjson   one JSON object per line                      -> "path:LINE"
    .json              a JSON array of objects, or JSON lines (BFCL   -> "path row I" / "path:LINE"
                       ships JSON lines under .json names)
    .parquet           read with pyarrow, when it is installed        -> "path row I"
Rows are numbered from 0, lines from 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")


class MissingDependencyError(ImportError, ValueError):
    """An optional package a data source needs is absent; a ValueError too, so the CLI reports it
    as bad input (one line, with the install command)."""


def read_rows(source: str | os.PathLike | Iterable[Mapping]) -> Iterator[tuple[str, Any]]:
    """Yield (location, row) for every row; rows are whatever the file holds (callers check shape)."""
    if not isinstance(source, (str, os.PathLike)):
        yield from _dataset_rows(source)
        return
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _json_lines(path)
    elif suffix == ".json":
        yield from _json_file(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise ValueError(f"{path}: unknown dataset format {suffix or '(no suffix)'!r}; expected one of {SUFFIXES}")


def _dataset_rows(rows: Iterable[Mapping]) -> Iterator[tuple[str, Any]]:
    # A `datasets.Dataset` iterates as dicts, like any list of rows.
    if isinstance(rows, (bytes, Mapping)) or not isinstance(rows, Iterable):
        raise ValueError(f"dataset must be a file path or an iterable of rows, got {type(rows).__name__}")
    name = type(rows).__name__
    for index, row in enumerate(rows):
        yield f"{name} row {index}", row


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield f"{path}:{lineno}", row


def _json_file(path: Path) -> Iterator[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        yield from _json_lines(path)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    for index, row in enumerate(rows):
        yield f"{path} row {index}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    if importlib.util.find_spec("pyarrow") is None:
        raise MissingDependencyError(f"{path}: reading parquet needs pyarrow, which is not installed (pip install pyarrow)")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from None
    for index, row in enumerate(table.to_pylist()):
        yield f"{path} row {index}", row


def require_mapping(row: Any, where: str) -> Mapping:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row
