"""Benchmark the dedup stage against datasketch MinHash + MinHashLSH on the same documents.

One run measures, on a corpus built from ``../shared/eval/dedup/docs.parquet`` (replica 0 is
the real set; replica r >= 1 holds, per document, either a lightly edited copy (2% of the words
replaced: a near duplicate) or a splice of two documents (a new document), with new ids):

* throughput (docs/s, wall and CPU) and peak memory of this stage (local executor, one
  worker) vs datasketch (``MinHash.bulk`` + ``MinHashLSH`` query-then-insert at 0.8), at 1x,
  2x and 4x the base size, shards of a fixed size (so 4x has 4x the shards);
* scaling 1 -> 2 workers on an 8x corpus (``--ray-size``; Ray executor, stage time excluding
  ``ray.init``; every phase starts its actors, about a second each on a busy machine);
* peak RSS of each system's whole process tree (psutil sampling every 20 ms), and for Ray the
  largest single worker.

Every measurement runs in a fresh child process; ours and datasketch alternate ``--repeats``
times and the fastest run of each counts (CPU time too: the machine may be shared). Both read
the same Parquet shards; datasketch only decides which ids to keep, while the stage also writes
its kept and rejected shards, so the time of the stage without its output phase is shown too.
Skips cleanly when ../shared is absent.

    .venv/bin/python bench/bench_dedup.py [--sizes 1,2,4] [--repeats 2] [--no-ray] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from eval_dedup import EVAL, datasketch_dedup, kept_ids, run_stage, write_shards  # noqa: E402


def build_corpus(base: pa.Table, k: int, seed: int = 0) -> pa.Table:
    """``k`` replicas of ``base``: replica 0 as is, the others near-duplicates or splices."""
    ids, texts = base.column("id").to_pylist(), base.column("text").to_pylist()
    vocab = sorted({w for t in texts[:200] for w in t.split()})
    out_ids, out_texts = list(ids), list(texts)
    rng = random.Random(seed)
    for r in range(1, k):
        for i, t in zip(ids, texts):
            w = t.split()
            if rng.random() < 0.5:
                for j in rng.sample(range(len(w)), max(1, len(w) // 50)):
                    w[j] = rng.choice(vocab)
                new = " ".join(w)
            else:
                other = texts[rng.randrange(len(texts))].split()
                new = " ".join(w[: len(w) // 2] + other[len(other) // 2 :])
            out_ids.append(f"{i}-r{r}")
            out_texts.append(new)
    return pa.table({"id": pa.array(out_ids, pa.string()), "text": pa.array(out_texts, pa.string())})


# --------------------------------------------------------------------------- child side


def child(args: argparse.Namespace) -> None:
    shards = sorted(Path(args.shards_dir).glob("part-*.parquet"))
    if args.child == "datasketch":
        c0, t0 = time.process_time(), time.perf_counter()
        t = pa.concat_tables([pq.read_table(p, columns=["id", "text"]) for p in shards])
        kept = datasketch_dedup(t.column("id").to_pylist(), t.column("text").to_pylist(), 0.8)
        res = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "kept": len(kept)}
    else:
        if args.executor == "ray":
            from curate.executors import get_executor

            get_executor("ray", args.workers)  # ray.init() before the clock starts
        out = Path(args.work) / "dedup"
        c0 = time.process_time()
        body, secs = run_stage(shards, out, args.executor, args.workers, {"keep_work": False})
        res = {"seconds": secs, "kept": len(kept_ids(out)), "phases": body["timings"]["phases"],
               "partitions": body["lsh"]["partitions"]}
        if args.executor == "local":
            res["cpu_seconds"] = time.process_time() - c0
    print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------- parent side


def _sample_tree(pid: int, stop: threading.Event, peaks: dict) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        total, worker = 0, 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                name = " ".join(p.cmdline()[:1])
                ct = p.cpu_times()
                peaks.setdefault("cpu", {})[p.pid] = ct.user + ct.system
            except psutil.Error:
                continue
            total += rss
            if name.startswith("ray::") and "IDLE" not in name:
                worker = max(worker, rss)
        peaks["tree"] = max(peaks.get("tree", 0), total)
        peaks["driver"] = max(peaks.get("driver", 0), procs[0].memory_info().rss if procs else 0)
        peaks["worker"] = max(peaks.get("worker", 0), worker)
        stop.wait(0.02)


def measure(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CURATE_NO_PROGRESS": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
    stop, peaks = threading.Event(), {}
    th = threading.Thread(target=_sample_tree, args=(proc.pid, stop, peaks), daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    res["peak_rss_mb"] = round(peaks.get("tree", 0) / 2**20, 1)
    res["peak_driver_rss_mb"] = round(peaks.get("driver", 0) / 2**20, 1)
    if peaks.get("worker"):
        res["peak_worker_rss_mb"] = round(peaks["worker"] / 2**20, 1)
    res.setdefault("cpu_seconds", round(sum(peaks.get("cpu", {}).values()), 3))  # process tree (sampled)
    return res


def best_of(runs: list[dict]) -> dict:
    """Fastest wall and CPU time over repeats, largest peak memory."""
    out = dict(min(runs, key=lambda r: r["seconds"]))
    out["cpu_seconds"] = min(r["cpu_seconds"] for r in runs)
    for k in ("peak_rss_mb", "peak_driver_rss_mb"):
        out[k] = max(r[k] for r in runs)
    out["repeats"] = len(runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--shard-docs", type=int, default=1143)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--ray-size", type=int, default=8, help="corpus size (x base) of the Ray 1 -> 2 worker runs")
    ap.add_argument("--out")
    ap.add_argument("--child", choices=["ours", "datasketch"], help=argparse.SUPPRESS)
    ap.add_argument("--shards-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--executor", default="local", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    if not (EVAL / "docs.parquet").exists():
        print(f"skipped: {EVAL} is absent")
        return 0
    base = pq.read_table(EVAL / "docs.parquet", columns=["id", "text"])
    sizes = [int(x) for x in args.sizes.split(",")]
    me = [sys.executable, str(Path(__file__).resolve())]
    report: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "sizes": {}, "scaling": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in sizes:
            corpus = build_corpus(base, k)
            sdir = tmp / f"x{k}"
            n_shards = max(1, -(-corpus.num_rows // args.shard_docs))
            write_shards(corpus, sdir, n_shards)
            text_mb = sum(len(t.encode()) for t in corpus.column("text").to_pylist()) / 2**20
            row = {"docs": corpus.num_rows, "shards": n_shards, "text_mb": round(text_mb, 1)}
            runs: dict[str, list] = {"ours": [], "datasketch": []}
            for rep in range(args.repeats):  # alternate, so both see the same machine load
                runs["ours"].append(measure(me + ["--child", "ours", "--shards-dir", str(sdir),
                                                  "--work", str(tmp / f"w{k}-{rep}")]))
                runs["datasketch"].append(measure(me + ["--child", "datasketch", "--shards-dir", str(sdir)]))
            for name in ("ours", "datasketch"):
                r = row[name] = best_of(runs[name])
                r["docs_per_s"] = round(corpus.num_rows / r["seconds"], 1)
                r["docs_per_cpu_s"] = round(corpus.num_rows / r["cpu_seconds"], 1)
            o = row["ours"]
            o["decide_seconds"] = round(sum(v for ph, v in o["phases"].items() if ph != "filter"), 3)
            row["speedup_wall"] = round(o["docs_per_s"] / row["datasketch"]["docs_per_s"], 2)
            row["speedup_cpu"] = round(o["docs_per_cpu_s"] / row["datasketch"]["docs_per_cpu_s"], 2)
            row["speedup_decide_wall"] = round(row["datasketch"]["seconds"] / o["decide_seconds"], 2)
            report["sizes"][f"{k}x"] = row
            print(json.dumps({f"{k}x": row}), flush=True)
        if not args.no_ray:
            k = args.ray_size
            sdir = tmp / f"x{k}"
            corpus = build_corpus(base, k)
            if not sdir.exists():
                write_shards(corpus, sdir, max(1, -(-corpus.num_rows // args.shard_docs)))
            report["scaling"]["size"] = f"{k}x"
            for w in (1, 2):
                r = measure(me + ["--child", "ours", "--shards-dir", str(sdir), "--work", str(tmp / f"ray{w}"),
                                  "--executor", "ray", "--workers", str(w)])
                r["docs_per_s"] = round(corpus.num_rows / r["seconds"], 1)
                report["scaling"][f"ray_{w}_workers"] = r
                print(json.dumps({f"ray_{w}_workers": r}), flush=True)
    print()
    print(f"{'size':>4} {'docs':>6} {'MB':>5} | {'ours docs/s':>11} {'/cpu-s':>7} {'peak MB':>7} | "
          f"{'datasketch docs/s':>17} {'/cpu-s':>7} {'peak MB':>7} | {'x wall':>6} {'x cpu':>5} {'x decide':>8}")
    for key, row in report["sizes"].items():
        o, d = row["ours"], row["datasketch"]
        print(f"{key:>4} {row['docs']:>6} {row['text_mb']:>5} | {o['docs_per_s']:>11} {o['docs_per_cpu_s']:>7} "
              f"{o['peak_rss_mb']:>7} | {d['docs_per_s']:>17} {d['docs_per_cpu_s']:>7} {d['peak_rss_mb']:>7} | "
              f"{row['speedup_wall']:>6} {row['speedup_cpu']:>5} {row['speedup_decide_wall']:>8}")
    first, last = report["sizes"][f"{sizes[0]}x"], report["sizes"][f"{sizes[-1]}x"]
    if len(sizes) > 1:
        print(f"input x{last['docs'] / first['docs']:.1f} ({first['text_mb']} -> {last['text_mb']} MB of text): "
              f"ours peak RSS {first['ours']['peak_rss_mb']} -> {last['ours']['peak_rss_mb']} MB "
              f"(x{last['ours']['peak_rss_mb'] / first['ours']['peak_rss_mb']:.2f}), datasketch "
              f"{first['datasketch']['peak_rss_mb']} -> {last['datasketch']['peak_rss_mb']} MB "
              f"(x{last['datasketch']['peak_rss_mb'] / first['datasketch']['peak_rss_mb']:.2f})")
    if report["scaling"]:
        s1, s2 = report["scaling"]["ray_1_workers"], report["scaling"]["ray_2_workers"]
        print(f"ray on {report['scaling']['size']} ({corpus.num_rows} docs): 1 worker {s1['docs_per_s']} docs/s, 2 workers {s2['docs_per_s']} docs/s "
              f"(x{s2['docs_per_s'] / s1['docs_per_s']:.2f}); largest worker RSS {s1.get('peak_worker_rss_mb')} / "
              f"{s2.get('peak_worker_rss_mb')} MB; process tree {s1['peak_rss_mb']} / {s2['peak_rss_mb']} MB")
    print(f"x wall / x cpu: docs/s ratio ours (whole stage, one worker) / datasketch; x decide: datasketch time / "
          f"ours without the output-writing phase. Load average at start {report['load_avg_at_start']} on "
          f"{report['cpus']} CPUs (shared machine).")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
