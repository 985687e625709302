"""The one shard writer: kept + rejected rows of one shard, conservation, declared reasons.

Every stage that writes document shards (the runner for map and source stages, and the
filtering phase of global stages such as dedup and perplexity) calls :func:`write_shard`. It
checks ``input == kept + rejected`` and that every reject code is declared in the reason
registry before anything is written, writes ``part-NNNNN.parquet`` and
``rejected/part-NNNNN.parquet`` atomically and returns the marker body that the phase engine
stores and the manifest sums.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import reasons as reason_registry
from .manifest import check_conservation, shard_name
from .schema import rejected_schema
from .shardio import write_parquet


def write_shard(
    out_dir: str | Path,
    index: int,
    kept: pa.Table,
    rejected: pa.Table | None,
    n_input: int,
    *,
    where: str,
    input_info: dict | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write shard ``index`` of a stage into ``out_dir``.

    Args:
        out_dir: the stage directory.
        index: the shard number (``part-{index:05d}``).
        kept: the kept rows.
        rejected: the rejected rows (built with :func:`curate.schema.make_rejected`), or None.
        n_input: records in the input, counted as the input holds them.
        where: names the stage and shard in error messages.
        input_info: recorded as the marker's ``input`` (path, sha256 ...); ``rows`` is added.
        stats: extra per-shard figures, summed into the stage manifest.

    Returns:
        The marker body: ``index``, ``input``, ``kept``, ``rejected``, ``reasons``,
        ``outputs`` (``kept``/``rejected`` file info), ``files`` and ``stats``.
    """
    if rejected is None:
        rejected = rejected_schema(kept.schema).empty_table()
    check_conservation(n_input, kept.num_rows, rejected.num_rows, where)
    reasons = Counter(rejected.column("reason").to_pylist()) if rejected.num_rows else Counter()
    reason_registry.check(sorted(reasons))
    out_dir = Path(out_dir)
    name = shard_name(index)
    kinfo = write_parquet(kept, out_dir / f"{name}.parquet")
    rinfo = write_parquet(rejected, out_dir / "rejected" / f"{name}.parquet")
    return {
        "index": index,
        "input": {**(input_info or {}), "rows": n_input},
        "kept": kept.num_rows,
        "rejected": rejected.num_rows,
        "reasons": dict(sorted(reasons.items())),
        "outputs": {"kept": kinfo, "rejected": rinfo},
        "files": [kinfo, rinfo],
        "stats": stats or {},
    }


def sum_shards(markers: list[dict], where: str) -> dict[str, Any]:
    """Totals of :func:`write_shard` markers (in shard order), conservation checked."""
    n_in = sum(m["input"]["rows"] for m in markers)
    n_kept = sum(m["kept"] for m in markers)
    n_rej = sum(m["rejected"] for m in markers)
    check_conservation(n_in, n_kept, n_rej, where)
    reasons: Counter = Counter()
    for m in markers:
        reasons.update(m["reasons"])
    return {
        "input_rows": n_in,
        "kept_rows": n_kept,
        "rejected_rows": n_rej,
        "reasons": dict(sorted(reasons.items())),
        "shards": [
            {"index": m["index"], "input": m["input"], "kept": m["kept"], "rejected": m["rejected"]} for m in markers
        ],
        "outputs": [m["outputs"]["kept"] for m in markers],
        "rejected_outputs": [m["outputs"]["rejected"] for m in markers],
    }
