"""The per-stage ``_manifest.json``, ``_SUCCESS`` (with every file the stage wrote, checked
before a finished stage is trusted) and the conservation check."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import ConservationError
from .shardio import atomic_write_json, file_changed, file_info

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
SHARDS_DIR = "_shards"


def shard_name(i: int) -> str:
    return f"part-{i:05d}"


def check_conservation(n_input: int, n_kept: int, n_rejected: int, where: str) -> None:
    """Raise ConservationError when ``n_input != n_kept + n_rejected``."""
    if n_input != n_kept + n_rejected:
        raise ConservationError(
            f"{where}: {n_input} documents in, but {n_kept} kept + {n_rejected} rejected = "
            f"{n_kept + n_rejected}"
        )


def sum_stats(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum numeric stats across shards (non-numeric values are dropped from the sum)."""
    total: Counter = Counter()
    for st in items:
        for k, v in st.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] += v
    return dict(sorted(total.items()))


def write_manifest(stage_dir: Path, body: dict[str, Any]) -> Path:
    path = stage_dir / MANIFEST
    atomic_write_json(path, body)
    return path


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    return json.loads(p.read_text())


WORK_DIR = "_work"


def _stage_files(stage_dir: Path) -> list[Path]:
    """Files a stage wrote, markers, work files and _SUCCESS excepted."""
    out = []
    for p in sorted(Path(stage_dir).rglob("*")):
        rel = p.relative_to(stage_dir)
        if p.is_file() and rel.parts[0] not in (SHARDS_DIR, WORK_DIR, SUCCESS) and not p.name.endswith(".tmp"):
            out.append(p)
    return out


def write_success(stage_dir: Path, config_hash: str, inputs_digest: str) -> None:
    """Mark a stage finished, recording the size and checksum of every file it wrote."""
    stage_dir = Path(stage_dir)
    files = []
    for p in _stage_files(stage_dir):
        info = file_info(p)
        files.append({"path": str(p.relative_to(stage_dir)), "bytes": info["bytes"], "xxh3": info["xxh3"]})
    atomic_write_json(stage_dir / SUCCESS, {"config_hash": config_hash, "inputs_digest": inputs_digest, "files": files})


def verify_finished(stage_dir: Path, done: dict) -> list[str]:
    """What changed in a finished stage since its ``_SUCCESS`` was written (empty: nothing)."""
    stage_dir = Path(stage_dir)
    files = done.get("files")
    if files is None:
        return [f"{stage_dir / SUCCESS} records no files (written by an older version)"]
    changes = [why for f in files if (why := file_changed(f, stage_dir)) is not None]
    known = {f["path"] for f in files}
    for p in _stage_files(stage_dir):
        if str(p.relative_to(stage_dir)) not in known:
            changes.append(f"{p} was added after the stage finished")
    return changes


def remove_unrecorded(stage_dir: Path, done: dict) -> None:
    """Delete files a finished stage did not write (e.g. a COPY TO into its folder)."""
    known = {f["path"] for f in done.get("files") or []}
    for p in _stage_files(stage_dir):
        if str(p.relative_to(stage_dir)) not in known and p.name != MANIFEST:
            p.unlink(missing_ok=True)


def read_success(stage_dir: Path) -> dict | None:
    p = Path(stage_dir) / SUCCESS
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None
