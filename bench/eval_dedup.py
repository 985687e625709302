"""Evaluate the dedup stage on ../shared/eval/dedup, next to datasketch MinHashLSH.

Runs the stage (global across ``--shards`` input shards) on ``docs.parquet`` and scores the
kept ids with the set's own ``score.py``; then runs datasketch ``MinHash`` + ``MinHashLSH``
(query-then-insert in input order, same 5-gram word shingles of ``text.lower().split()``)
at thresholds 0.8 and 0.7 for reference. Prints one JSON line per system and a summary;
exits 1 when the stage misses a target of the issue (dup_recall@0.8 >= 0.97, exact recall
1.0, no false removals, <= 2% of variants with Jaccard < 0.7 removed).

    .venv/bin/python bench/eval_dedup.py [--shards 4] [--executor local|ray] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
EVAL = SHARED / "eval" / "dedup"


def write_shards(table: pa.Table, out_dir: Path, n_shards: int) -> list[Path]:
    """Split ``table`` into ``n_shards`` contiguous Parquet shards ``part-XXXXX.parquet``."""
    from curate.shardio import write_parquet

    paths = []
    n = table.num_rows
    for s in range(n_shards):
        a, b = s * n // n_shards, (s + 1) * n // n_shards
        paths.append(Path(write_parquet(table.slice(a, b - a), out_dir / f"part-{s:05d}.parquet")["path"]))
    return paths


def run_stage(shards: list[Path], out_dir: Path, executor: str = "local", workers: int = 1,
              config: dict | None = None) -> tuple[dict, float]:
    """Run the dedup stage on ``shards`` into ``out_dir``; returns (manifest body, seconds)."""
    from curate.executors import get_executor
    from curate.runner import run_global_stage
    from stages.dedup import DedupStage

    stage = DedupStage(DedupStage.Config.model_validate(config or {}))
    ex = get_executor(executor, workers)
    t0 = time.perf_counter()
    body = run_global_stage(stage, list(shards), out_dir, ex, workers=workers)
    return body, time.perf_counter() - t0


def kept_ids(out_dir: Path) -> list[str]:
    ids: list[str] = []
    for p in sorted(out_dir.glob("part-*.parquet")):
        ids += pq.read_table(p, columns=["id"]).column("id").to_pylist()
    return ids


def shingles(text: str, n: int = 5) -> list[bytes]:
    w = (text or "").lower().split()
    return [" ".join(w[i : i + n]).encode() for i in range(max(1, len(w) - n + 1))]


def datasketch_dedup(ids: list[str], texts: list[str], threshold: float, num_perm: int = 128) -> list[str]:
    """datasketch MinHash + MinHashLSH: a document is removed when the index already holds a
    candidate for it, else inserted (the usual streaming use of MinHashLSH)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = []
    for i, m in zip(ids, MinHash.bulk((shingles(t) for t in texts), num_perm=num_perm)):
        if not lsh.query(m):
            lsh.insert(i, m)
            kept.append(i)
    return kept


def score(kept: list[str], tmp: Path) -> dict:
    path = tmp / f"kept-{time.monotonic_ns()}.parquet"
    pq.write_table(pa.table({"id": pa.array(kept, pa.string())}), path)
    out = subprocess.run([sys.executable, str(EVAL / "score.py"), "--kept", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


TARGETS = {"dup_recall@0.8": (">=", 0.97), "exact_recall": (">=", 1.0), "false_removals": ("<=", 0),
           "over_removal_rate_j_lt_0.7": ("<=", 0.02)}


def check(res: dict) -> dict[str, bool]:
    return {k: (res[k] >= v if op == ">=" else res[k] <= v) for k, (op, v) in TARGETS.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-datasketch", action="store_true")
    args = ap.parse_args()
    if not (EVAL / "docs.parquet").exists():
        print(f"skipped: {EVAL} is absent")
        return 0
    docs = pq.read_table(EVAL / "docs.parquet")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = write_shards(docs, tmp / "in", args.shards)
        body, secs = run_stage(shards, tmp / "dedup", args.executor, args.workers)
        res = score(kept_ids(tmp / "dedup"), tmp)
        ok = check(res)
        rows.append(("curate dedup", res, secs))
        print(json.dumps({"system": "curate dedup", "seconds": round(secs, 3), "lsh": body["lsh"],
                          "reasons": body["reasons"], "clusters": body["clusters"], **res}))
        if not args.no_datasketch:
            ids, texts = docs.column("id").to_pylist(), docs.column("text").to_pylist()
            for th in (0.8, 0.7):
                t0 = time.perf_counter()
                kept = datasketch_dedup(ids, texts, th)
                secs = time.perf_counter() - t0
                r = score(kept, tmp)
                rows.append((f"datasketch MinHashLSH@{th}", r, secs))
                print(json.dumps({"system": f"datasketch MinHashLSH@{th}", "seconds": round(secs, 3), **r}))
    print()
    print(f"{'system':28} {'dup_recall@0.8':>14} {'exact':>6} {'false_rm':>8} {'over_rm<0.7':>11} {'removed':>7} {'s':>6}")
    for name, r, secs in rows:
        print(f"{name:28} {r['dup_recall@0.8']:>14} {r['exact_recall']:>6} {r['false_removals']:>8} "
              f"{r['over_removal_rate_j_lt_0.7']:>11} {r['n_removed']:>7} {secs:>6.2f}")
    print("targets:", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in ok.items()))
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
