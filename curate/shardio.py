"""Shard IO: Parquet (zstd) written atomically (temp file, fsync, rename) with checksums."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ShardError, WriteError

PARQUET_OPTS = dict(compression="zstd", compression_level=3, write_statistics=True)


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def write_error(path: Path, tmp: Path, e: OSError) -> WriteError:
    """The :class:`WriteError` for an OSError met while writing ``path`` through ``tmp``;
    the partial temp file is removed (it would only hold space on a full disk)."""
    if isinstance(e, WriteError):
        return e
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
    code = e.errno
    if code is None:  # pyarrow sometimes gives only "... [errno 28] ..." in the message
        m = re.search(r"\[errno (\d+)\]", str(e))
        code = int(m.group(1)) if m else None
    return WriteError(code, os.strerror(code) if code else str(e), str(path))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``path.tmp`` + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, tmp, e) from e
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(table: pa.Table, path: str | os.PathLike, row_group_size: int = 10_000) -> dict:
    """Write ``table`` atomically; return ``{"path", "rows", "sha256", "bytes"}``."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, row_group_size=row_group_size, **PARQUET_OPTS)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, tmp, e) from e
    _fsync_dir(path.parent)
    return {"path": str(path), "rows": table.num_rows, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read one shard; a malformed file raises ShardError naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"cannot read Parquet shard {path}: {e}") from e


def file_info(path: str | os.PathLike, rows: int | None = None) -> dict:
    path = Path(path)
    return {"path": str(path), "rows": rows, "sha256": sha256_file(path), "bytes": path.stat().st_size}
