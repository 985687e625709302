"""Extraction throughput: the extract stage on Ray with 1 and 2 workers, side by side with a
plain single-process ``trafilatura.extract`` loop over the same WARC records.

Input: ``../shared/corpora/debian-docs`` (skips when absent). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "debian-docs"


def plain_loop(files: list[Path], decode: bool = False) -> tuple[int, float]:
    """What a user would write: warcio + trafilatura.extract per HTML 200 response, on the
    record's bytes (trafilatura detects the charset itself) or, with ``decode``, on the bytes
    decoded as UTF-8 first (what the stage does for these pages)."""
    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response" or rec.http_headers is None:
                    continue
                if rec.http_headers.get_statuscode() != "200":
                    continue
                if "html" not in (rec.http_headers.get_header("Content-Type") or ""):
                    continue
                body = rec.content_stream().read()
                doc = body.decode("utf-8", errors="replace") if decode else body
                trafilatura.extract(doc, include_comments=False, deduplicate=False)
                n += 1
    return n, time.perf_counter() - t0


def stage_run(files: list[Path], workers: int, work: Path) -> tuple[int, float, float]:
    from curate.executors import get_executor
    from curate.runner import run_pipeline

    get_executor("ray", workers)  # start Ray before timing (embedded start-up is ~4 s)
    inp = work / "in"
    inp.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = inp / f.name
        if not link.exists():
            link.symlink_to(f)
    run = work / f"run{workers}"
    shutil.rmtree(run, ignore_errors=True)
    spec = {"pipeline": "bench", "stages": {"extract": {"input": {"paths": [str(inp)]}}}}
    t0 = time.perf_counter()
    m = run_pipeline(spec, run, executor="ray", workers=workers, log=lambda *_: None)["extract"]
    wall = time.perf_counter() - t0
    return m["input_rows"], wall, m["timings"]["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shards", type=int, default=2, help="how many of the 8 WARC shards to use")
    args = ap.parse_args()
    files = sorted(CORPUS.glob("part-*.warc.gz"))[: args.shards]
    if not files:
        print("SKIP: ../shared/corpora/debian-docs is absent")
        return 0
    os.environ.setdefault("CURATE_NO_PROGRESS", "1")
    sys.path.insert(0, str(ROOT))
    n_plain, t_plain = plain_loop(files)
    n_str, t_str = plain_loop(files, decode=True)
    rows = {
        "plain_trafilatura_loop": {"docs": n_plain, "seconds": round(t_plain, 2), "docs_per_s": round(n_plain / t_plain, 2)},
        "plain_loop_utf8_str_input": {"docs": n_str, "seconds": round(t_str, 2), "docs_per_s": round(n_str / t_str, 2)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for w in (1, 2):
            n, wall, _ = stage_run(files, w, Path(tmp))
            rows[f"curate_extract_ray_{w}w"] = {"docs": n, "seconds": round(wall, 2), "docs_per_s": round(n / wall, 2)}
    base = rows["plain_trafilatura_loop"]["docs_per_s"]
    for r in rows.values():
        r["ratio_vs_plain"] = round(r["docs_per_s"] / base, 3)
    print(f"{'run':28s} {'docs':>6s} {'s':>8s} {'docs/s':>8s} {'x plain':>8s}")
    for k, r in rows.items():
        print(f"{k:28s} {r['docs']:6d} {r['seconds']:8.2f} {r['docs_per_s']:8.2f} {r['ratio_vs_plain']:8.3f}")
    print(json.dumps({"bench": "extract", "shards": len(files), "cpus": os.cpu_count(), "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
