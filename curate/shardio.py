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
import xxhash

from .errors import ShardError, WriteError

PARQUET_OPTS = dict(compression="zstd", compression_level=3, write_statistics=True)


def _hash_file(path: str | os.PathLike, *hashers, bufsize: int = 1 << 18) -> list[str]:
    """Hex digests of one read of ``path`` through every hasher given."""
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            for h in hashers:
                h.update(chunk)
    return [h.hexdigest() for h in hashers]


def sha256_file(path: str | os.PathLike) -> str:
    return _hash_file(path, hashlib.sha256())[0]


def fast_hash_file(path: str | os.PathLike) -> str:
    """xxh3-128 of a file: what a rerun checks (with the size) before trusting an output."""
    return _hash_file(path, xxhash.xxh3_128())[0]


def _hashes(path: Path) -> tuple[str, str]:
    sha, x = _hash_file(path, hashlib.sha256(), xxhash.xxh3_128())
    return sha, x


def file_changed(info: dict, base: str | os.PathLike | None = None) -> str | None:
    """Why the file recorded in ``info`` (``path``, ``bytes``, ``xxh3`` or ``sha256``) no
    longer matches, or None when it does. Relative paths resolve against ``base``."""
    p = Path(info["path"])
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    try:
        size = p.stat().st_size
    except OSError:
        return f"{p} is missing"
    if info.get("bytes") is not None and size != info["bytes"]:
        return f"{p} changed size ({info['bytes']} -> {size} bytes)"
    if info.get("xxh3"):
        if fast_hash_file(p) != info["xxh3"]:
            return f"{p} changed content (checksum differs)"
    elif info.get("sha256") and sha256_file(p) != info["sha256"]:
        return f"{p} changed content (checksum differs)"
    return None


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> dict:
    """Write ``data`` to ``path`` via ``path.tmp`` + fsync + rename; returns ``{"path",
    "bytes", "xxh3"}`` (hashed from memory: what the phase engine checks on resume)."""
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
    return {"path": str(path), "bytes": len(data), "xxh3": xxhash.xxh3_128_hexdigest(data)}


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
    return file_info(path, table.num_rows)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Read one shard; a malformed file raises ShardError naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"cannot read Parquet shard {path}: {e}") from e


def file_info(path: str | os.PathLike, rows: int | None = None) -> dict:
    """``{"path", "rows", "sha256", "xxh3", "bytes"}`` of a written file (one read)."""
    path = Path(path)
    sha, x = _hashes(path)
    return {"path": str(path), "rows": rows, "sha256": sha, "xxh3": x, "bytes": path.stat().st_size}
