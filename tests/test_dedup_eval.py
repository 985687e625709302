"""The dedup stage on ../shared/eval/dedup (real documents with planted near-duplicates):
the issue's targets, scored by the set's own score.py. Skips when ../shared is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.executors import LocalExecutor
from curate.shardio import write_parquet
from curate.runner import run_global_stage
from stages.dedup import DedupStage


def test_eval_targets(shared_dir, tmp_path):
    ev = shared_dir / "eval" / "dedup"
    docs = pq.read_table(ev / "docs.parquet")
    n, shards = docs.num_rows, []
    for s in range(4):  # duplicates must be found across shards
        a, b = s * n // 4, (s + 1) * n // 4
        shards.append(Path(write_parquet(docs.slice(a, b - a), tmp_path / "in" / f"part-{s:05d}.parquet")["path"]))
    out = tmp_path / "dedup"
    stage = DedupStage(DedupStage.Config())
    body = run_global_stage(stage, shards, out, LocalExecutor(1))
    kept = pa.concat_tables([pq.read_table(p, columns=["id"]) for p in sorted(out.glob("part-*.parquet"))])
    pq.write_table(kept, tmp_path / "kept.parquet")
    res = subprocess.run([sys.executable, str(ev / "score.py"), "--kept", str(tmp_path / "kept.parquet")],
                         capture_output=True, text=True, check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["dup_recall@0.8"] >= 0.97
    assert m["exact_recall"] == 1.0
    assert m["false_removals"] == 0
    assert m["over_removal_rate_j_lt_0.7"] <= 0.02
    assert body["rejected_rows"] == m["n_removed"]
