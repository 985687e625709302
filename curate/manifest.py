"""Per-shard markers and the per-stage ``_manifest.json`` with the conservation check."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import ConservationError
from .shardio import atomic_write_json, sha256_file

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


def marker_valid(marker_path: Path, config_hash: str, input_sha: str | None) -> dict | None:
    """Return the marker of a finished shard if it still matches config, input and outputs."""
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        return None
    if marker.get("config_hash") != config_hash:
        return None
    if input_sha is not None and marker.get("input", {}).get("sha256") != input_sha:
        return None
    for out in marker.get("outputs", {}).values():
        p = Path(out["path"])
        if not p.exists() or sha256_file(p) != out["sha256"]:
            return None
    return marker


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


def write_success(stage_dir: Path, config_hash: str, inputs_digest: str) -> None:
    atomic_write_json(stage_dir / SUCCESS, {"config_hash": config_hash, "inputs_digest": inputs_digest})


def read_success(stage_dir: Path) -> dict | None:
    p = Path(stage_dir) / SUCCESS
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None
