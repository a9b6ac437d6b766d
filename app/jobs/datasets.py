"""The dataset files under the data roots, with columns and a few sample rows; no HTTP
(`GET /datasets`, app.api.train_jobs, serves them to admin keys: the rows are training data).

Only regular files under a data root are listed or read: folders are walked without following
symbolic links, every file is resolved and must lie inside a root (a link pointing out is
skipped), and `one_dataset` refuses any path that resolves outside the roots. Rows are read
with bounded work (at most `MAX_SCAN_BYTES` of a JSON/CSV file); values are returned as data,
for the console to show as text.

`relative` and `hide_roots` take the server's paths out of an answer, for a key limited to some
adapters: it sees only the first root's files by their paths relative to it (what a training
job takes): where the server keeps its data (and its store beside it) is no business of a
team's key (issue 26).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.jobs.records import JobError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_FILES = 500
MAX_DEPTH = 4
MAX_SCAN_BYTES = 1 << 20
MAX_CELL_CHARS = 500
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "document", "question")
LABEL_NAMES = ("label", "labels", "category", "class", "sentiment", "target", "stars")


class DatasetError(JobError):
    code = "dataset_not_found"


class DatasetForbidden(JobError):
    code = "dataset_forbidden"


class DatasetFile(BaseModel):
    name: str = Field(description="path relative to its data root")
    path: str = Field(
        description="pass it as a training job's `dataset`: the absolute path (relative to the "
        "first root for a key limited to some adapters)"
    )
    root: str = Field(description="its data root ('' for a key limited to some adapters)")
    size_bytes: int
    format: str
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="the first rows (long values cut)")
    text_column: str | None = Field(None, description="proposed text column")
    label_column: str | None = Field(None, description="proposed label column")
    error: str | None = Field(None, description="why the rows could not be read")


class DatasetList(BaseModel):
    roots: list[str] = Field(description="the data roots (none for a key limited to adapters)")
    datasets: list[DatasetFile]
    truncated: bool = False


def _inside(path: Path, roots: list[Path]) -> Path | None:
    """The root that `path` (resolved) lies in, else None."""
    resolved = path.resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return root
    return None


def walk(roots: list[Path]) -> tuple[list[tuple[Path, Path]], bool]:
    """(file, root) for every dataset file under the roots (no links followed), and truncated."""
    found: list[tuple[Path, Path]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root, followlinks=False):
            depth = len(Path(folder).relative_to(root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or path.suffix.lower() not in FORMATS:
                    continue
                if not path.is_file() or _inside(path, [root]) is None:
                    continue  # a link to something outside the root, or not a file
                if len(found) == MAX_FILES:
                    return found, True
                found.append((path, root))
    return found, False


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        return value[:MAX_CELL_CHARS] + "…"
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return _cut(text)
    return value


def _head_bytes(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_SCAN_BYTES)
    return data.decode("utf-8", errors="replace")


def _jsonl_rows(text: str, limit: int) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        if len(rows) == limit:
            break
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # the last line may be cut by the scan limit
            rows.append(row if isinstance(row, dict) else {"value": row})
    return rows


def _json_rows(text: str, limit: int) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _jsonl_rows(text, limit)  # JSON lines in a .json file, or a cut array
    if isinstance(data, dict):  # {"col": [...], ...} or {"data": [...]}
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        else:
            count = min((len(v) for v in lists.values()), default=0)
            return [{k: v[i] for k, v in lists.items()} for i in range(min(count, limit))]
    if isinstance(data, list):
        return [r if isinstance(r, dict) else {"value": r} for r in data[:limit]]
    return []


def _csv_rows(text: str, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for row in reader:
        if len(rows) == limit:
            break
        rows.append(dict(row))
    return list(reader.fieldnames or []), rows


def _parquet_rows(path: Path, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = list(parquet.schema_arrow.names)
    rows: list[dict[str, Any]] = []
    for batch in parquet.iter_batches(batch_size=max(limit, 1)):
        rows = batch.to_pylist()[:limit]
        break
    return columns, rows


def read_rows(path: Path, fmt: str, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
    if fmt == "parquet":
        return _parquet_rows(path, limit)
    text = _head_bytes(path)
    if fmt == "csv":
        return _csv_rows(text, limit)
    rows = _jsonl_rows(text, limit) if fmt == "jsonl" else _json_rows(text, limit)
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    return columns, rows


def propose(columns: list[str], rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(text column, label column) guessed from the names, else from the values."""
    lower = {c.lower(): c for c in columns}
    text = next((lower[n] for n in TEXT_NAMES if n in lower), None)
    label = next((lower[n] for n in LABEL_NAMES if n in lower), None)

    def mean_length(column: str) -> float:
        values = [str(r.get(column, "")) for r in rows]
        return sum(map(len, values)) / max(len(values), 1)

    if text is None and columns:
        text = max((c for c in columns if c != label), key=mean_length, default=None)
    if label is None:
        rest = [c for c in columns if c != text]
        label = min(rest, key=lambda c: len({str(r.get(c)) for r in rows}), default=None)
    return text, label


def describe(path: Path, root: Path, *, rows: int) -> DatasetFile:
    fmt = FORMATS[path.suffix.lower()]
    entry = DatasetFile(
        name=path.relative_to(root).as_posix(),
        path=str(path.resolve()),
        root=str(root),
        size_bytes=path.stat().st_size,
        format=fmt,
        columns=[],
        rows=[],
    )
    try:
        columns, sample = read_rows(path, fmt, rows)
    except Exception as exc:  # a malformed file is listed with the reason, not a 500
        entry.error = f"could not read rows: {type(exc).__name__}"
        return entry
    entry.columns = columns
    entry.rows = [{str(k): _cut(v) for k, v in row.items()} for row in sample]
    entry.text_column, entry.label_column = propose(columns, sample)
    return entry


def list_datasets(roots: list[Path], *, rows: int) -> DatasetList:
    files, truncated = walk(roots)
    order = {root: index for index, root in enumerate(roots)}
    files.sort(key=lambda item: (order[item[1]], item[0].relative_to(item[1]).as_posix()))
    return DatasetList(
        roots=[str(r) for r in roots],
        datasets=[describe(path, root, rows=rows) for path, root in files],
        truncated=truncated,
    )


def one_dataset(
    roots: list[Path], value: str, *, rows: int, relative_only: bool = False
) -> DatasetFile:
    """The file at `value` (relative to the first root, or absolute), only inside the roots."""
    try:
        path = Path(value).expanduser()
        if relative_only and path.is_absolute():
            raise DatasetForbidden("that path is outside the data roots")
        if not path.is_absolute():
            path = roots[0] / path
        root = _inside(path, roots)
        if root is None:
            raise DatasetForbidden("that path is outside the data roots")
        resolved = path.resolve()
        found = resolved.is_file() and resolved.suffix.lower() in FORMATS
    except (OSError, ValueError, RuntimeError):  # NUL bytes, names too long, link loops
        raise DatasetForbidden("not a usable path") from None
    if not found:
        raise DatasetError(f"no dataset file {value!r} in the data roots")
    return describe(resolved, root, rows=rows)


def relative(entry: DatasetFile) -> DatasetFile:
    """The entry without the server's paths: the file by its path relative to its root."""
    return entry.model_copy(update={"path": entry.name, "root": ""})


def hide_roots(listing: DatasetList) -> DatasetList:
    files = [relative(d) for d in listing.datasets]
    return listing.model_copy(update={"roots": [], "datasets": files})
