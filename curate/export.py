"""``curate export``: a stage's kept (or rejected) documents in the layouts other tools read.

* ``jsonl``: one JSON object per line, UTF-8 (not ASCII-escaped), keys in column order;
  NaN / infinity become null, bytes base64, dates and times ISO 8601.
* ``parquet``: one zstd Parquet file with the union of the shards' columns.
* ``messages``: OpenAI-style chat JSONL, ``{"messages": [{"role": ..., "content": ...}, ...]}``
  per line, from a ``messages`` column (a list of structs, or JSON text); turn keys whose
  value is null are left out (``content`` always stays). ``columns`` adds top-level keys.

Shards are read batch by batch in shard order (rows keep the order of the run), and the
output is written to a temporary file that is fsynced and renamed: a killed export leaves
no partial file behind.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import difflib
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CurateError
from .shardio import PARQUET_OPTS

FORMATS = ("jsonl", "parquet", "messages")
BATCH_ROWS = 4096


class ExportError(CurateError):
    """An export that cannot be done: unknown stage or column, unfinished stage, no shards."""


def _did_you_mean(name: str, options: list[str]) -> str:
    near = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def stage_files(run_dir: str | Path, stage: str, rejected: bool = False) -> tuple[Path, list[Path]]:
    """The stage folder and its kept (or rejected) shards, in shard order.

    ``stage`` is the stage's name as in the pipeline, or its SQL view name
    (``train_lm`` for ``train-lm``).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"run directory not found: {run}")
    names = sorted(d.name for d in run.iterdir() if d.is_dir() and (d / "_manifest.json").exists())
    by_view = {n.replace("-", "_").replace(".", "_"): n for n in names}
    name = stage if stage in names else by_view.get(stage)
    if name is None:
        if (run / stage).is_dir():
            raise ExportError(f"stage {stage!r} in {run} has not finished (no _manifest.json)")
        raise ExportError(f"no stage {stage!r} in {run} (stages: {', '.join(names) or 'none'}"
                          f"{_did_you_mean(stage, names)})")
    sdir = run / name
    if not (sdir / "_SUCCESS").exists():
        raise ExportError(f"stage {name!r} in {run} has not finished (no _SUCCESS)")
    files = sorted((sdir / "rejected").glob("*.parquet")) if rejected else sorted(sdir.glob("part-*.parquet"))
    if not files:
        what = "rejected shards" if rejected else "document shards (part-*.parquet)"
        raise ExportError(f"stage {name!r} in {run} has no {what} to export")
    return sdir, files


def _schema(files: list[Path]) -> pa.Schema:
    try:
        return pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    except (pa.ArrowException, OSError) as e:
        raise ExportError(f"cannot combine the schemas of {files[0].parent}: {e}") from None


def _select(schema: pa.Schema, columns: list[str] | None, fmt: str) -> list[str]:
    names = list(schema.names)
    if fmt == "messages" and "messages" not in names:
        raise ExportError(f"no 'messages' column to export as chat JSONL (columns: {_listing(names)})")
    if not columns:
        return ["messages"] if fmt == "messages" else names
    for c in columns:
        if c not in names:
            raise ExportError(f"unknown column {c!r} (columns: {_listing(names)}{_did_you_mean(c, names)})")
    if len(set(columns)) != len(columns):
        raise ExportError(f"column listed twice in {','.join(columns)}")
    if fmt == "messages" and "messages" not in columns:
        columns = ["messages", *columns]
    return list(columns)


def _batches(files: list[Path], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches of every shard, conformed to ``schema`` (absent columns are null)."""
    for f in files:
        pf = pq.ParquetFile(f)
        have = [n for n in schema.names if n in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=have):
            arrays = []
            for field in schema:
                if field.name in batch.schema.names:
                    arr = batch.column(field.name)
                    arrays.append(arr if arr.type == field.type else arr.cast(field.type))
                else:
                    arrays.append(pa.nulls(batch.num_rows, field.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold made JSON-able (non-finite floats -> null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _dumps(obj: dict) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(_plain(obj), ensure_ascii=False, allow_nan=False)


def _messages(value: Any, where: str) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ExportError(f"{where}: messages is not valid JSON: {e}") from None
    if not isinstance(value, list):
        raise ExportError(f"{where}: messages is a {type(value).__name__}, not a list of turns")
    turns = []
    for turn in value:
        if not isinstance(turn, dict) or "role" not in turn:
            raise ExportError(f"{where}: a turn is not an object with a role: {str(turn)[:80]!r}")
        turns.append({k: v for k, v in turn.items() if v is not None or k == "content"})
    return turns


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto it (after fsync) when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_lines(out, batches: Iterator[pa.RecordBatch], fmt: str, sdir: Path) -> int:
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            if fmt == "messages":
                row["messages"] = _messages(row["messages"], f"{sdir.name} row {n}")
            out.write(_dumps(row))
            out.write("\n")
            n += 1
    return n


def default_out(run_dir: str | Path, stage: str, fmt: str, rejected: bool) -> Path:
    suffix = (".rejected" if rejected else "") + (".messages.jsonl" if fmt == "messages" else f".{fmt}")
    return Path(run_dir) / "exports" / f"{stage}{suffix}"


def export_stage(
    run_dir: str | Path,
    stage: str,
    fmt: str = "jsonl",
    columns: list[str] | None = None,
    rejected: bool = False,
    out: str | Path | None = None,
) -> dict:
    """Write a stage's kept (``rejected=True``: rejected) rows to ``out``.

    Args:
        run_dir: the run directory.
        stage: stage name (or its SQL view name).
        fmt: ``jsonl``, ``parquet`` or ``messages``.
        columns: columns to write, in this order (default: all; for ``messages``, extra keys
            beside ``messages``).
        rejected: export the rejected rows (with ``stage``, ``reason``, ``detail``).
        out: output path; ``-`` writes JSONL to stdout; default ``RUN/exports/<stage>...``.

    Returns:
        ``{"path", "rows", "format", "columns"}``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)}{_did_you_mean(fmt, list(FORMATS))})")
    sdir, files = stage_files(run_dir, stage, rejected)
    full = _schema(files)
    cols = _select(full, columns, fmt)
    schema = pa.schema([full.field(c) for c in cols])
    batches = _batches(files, schema)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if out is None:
        out = default_out(run_dir, sdir.name, fmt, rejected)
    if str(out) == "-":
        if fmt == "parquet":
            raise ExportError("Parquet cannot be written to stdout; give --out PATH")
        n = _write_lines(sys.stdout, batches, fmt, sdir)
        sys.stdout.flush()
        return {"path": "-", "rows": n, "format": fmt, "columns": cols}
    path = Path(out)
    if path.is_dir():
        raise ExportError(f"--out {path} is a directory; give a file path")
    with _progress(total, f"export {sdir.name}") as advance, _atomic(path) as tmp:
        if fmt == "parquet":
            n = 0
            with pq.ParquetWriter(tmp, schema, **PARQUET_OPTS) as w:
                for batch in batches:
                    w.write_batch(batch, row_group_size=10_000)
                    n += batch.num_rows
                    advance(batch.num_rows)
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                n = _write_lines(f, _counting(batches, advance), fmt, sdir)
    return {"path": str(path), "rows": n, "format": fmt, "columns": cols}


def _counting(batches: Iterator[pa.RecordBatch], advance) -> Iterator[pa.RecordBatch]:
    for b in batches:
        yield b
        advance(b.num_rows)


@contextlib.contextmanager
def _progress(total: int, desc: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=not sys.stderr.isatty() or bool(os.environ.get("CURATE_NO_PROGRESS")))
    with progress:
        task = progress.add_task(desc, total=total)
        yield lambda n: progress.advance(task, n)
