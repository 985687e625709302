"""Tokenise+pack throughput: the mix stage on Ray with 1 and 2 workers, side by side with a plain
single-process ``tokenizers`` ``encode_batch`` loop over the same documents and tokenizer.

Input: Parquet document shards of any stage (``--input DIR``), or by default the text the
extract stage gets from ``../shared/corpora/debian-docs`` (extraction is not timed; skips when
the corpus is absent). A byte-level BPE is trained once, untimed, and every timed run loads it,
so the figures cover tokenisation and packing only. Prints a table and one JSON line.
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


def extracted_shards(files: list[Path], work: Path) -> list[Path]:
    from curate.runner import run_pipeline

    inp = work / "warc"
    inp.mkdir(parents=True, exist_ok=True)
    for f in files:
        (inp / f.name).symlink_to(f)
    spec = {"pipeline": "bench-mix-input", "stages": {"extract": {"input": {"paths": [str(inp)]}}}}
    run_pipeline(spec, work / "run", executor="ray", workers=2, log=lambda *_: None)
    return sorted((work / "run" / "extract").glob("part-*.parquet"))


def texts_of(shards: list[Path]) -> list[str]:
    import pyarrow.parquet as pq

    return [t or "" for p in shards for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]


def plain_loop(tok_path: Path, texts: list[str], batch: int) -> tuple[int, float]:
    """What a user would write: load the tokenizer, encode_batch over the texts, count ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    n = 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        for enc in tok.encode_batch(texts[i : i + batch], add_special_tokens=False):
            n += len(enc.ids) + 1  # + EOS, as the mix stage counts
    return n, time.perf_counter() - t0


def mix_run(shards: list[Path], tok_path: Path, workers: int, work: Path, batch: int) -> dict:
    from curate.executors import get_executor
    from curate.manifest import write_manifest, write_success
    from curate.runner import run_pipeline

    get_executor("ray", workers)  # start Ray before timing (embedded start-up is ~4 s)
    run = work / f"mix{workers}"
    shutil.rmtree(run, ignore_errors=True)
    up = run / "docs"
    up.mkdir(parents=True)
    for p in shards:
        (up / p.name).symlink_to(p.resolve())
    write_manifest(up, {"stage": "docs", "note": "bench input"})
    write_success(up, "bench", "bench")
    mixture = {
        "name": "bench",
        "seed": 0,
        "budget_tokens": "max",
        "val_fraction": 0.01,
        "tokenizer": {"path": str(tok_path)},
        "sources": {"all": {"where": "true", "weight": 1, "max_epochs": 1}},
    }
    spec = {
        "pipeline": "bench-mix",
        "stages": {
            "docs": {"type": "extract", "input": {"paths": ["(seeded by the benchmark)"]}},
            "mix": {"input": "docs", "config": {"mixture": mixture, "batch_docs": batch}},
        },
    }
    t0 = time.perf_counter()
    m = run_pipeline(spec, run, executor="ray", workers=workers, stages=["mix"], log=lambda *_: None)["mix"]
    wall = time.perf_counter() - t0
    meta = json.loads((run / "mix" / "meta.json").read_text())
    tokenised = sum(s["tokens"] for s in meta["sources"].values())
    return {
        "docs": m["kept_rows"],
        "tokens": tokenised,
        "packed_tokens": meta["train"]["tokens"] + meta["val"]["tokens"],
        "seconds": round(wall, 2),
        "tokens_per_s": round(tokenised / wall),
        "train_sha256": meta["train"]["files"][0]["sha256"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", type=Path, help="a directory of Parquet document shards (part-*.parquet)")
    ap.add_argument("--shards", type=int, default=2, help="debian-docs WARC shards to extract (default input)")
    ap.add_argument("--vocab", type=int, default=16384, help="vocabulary of the BPE trained for the bench")
    ap.add_argument("--batch", type=int, default=256, help="documents per encode_batch call")
    args = ap.parse_args()
    os.environ.setdefault("CURATE_NO_PROGRESS", "1")
    sys.path.insert(0, str(ROOT))
    from filters import bpe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.input:
            shards = sorted(args.input.glob("part-*.parquet"))
        else:
            files = sorted(CORPUS.glob("part-*.warc.gz"))[: args.shards]
            if not files:
                print("SKIP: ../shared/corpora/debian-docs is absent (or pass --input DIR)")
                return 0
            shards = extracted_shards(files, work)
        if not shards:
            print(f"SKIP: no part-*.parquet under {args.input}")
            return 0
        texts = texts_of(shards)
        tok = bpe.train_bpe(iter(texts), args.vocab)
        tok_path = work / "tokenizer.json"
        tok_path.write_text(bpe.tokenizer_json(tok), encoding="utf-8")
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

        n_plain, t_plain = plain_loop(tok_path, texts, args.batch)
        rows = {
            "plain_encode_batch_loop": {
                "docs": len(texts), "tokens": n_plain, "seconds": round(t_plain, 2),
                "tokens_per_s": round(n_plain / t_plain),
            }
        }
        for w in (1, 2):
            rows[f"curate_mix_ray_{w}w"] = mix_run(shards, tok_path, w, work, args.batch)
    shas = {r["train_sha256"] for k, r in rows.items() if k.startswith("curate")}
    base = rows["plain_encode_batch_loop"]["tokens_per_s"]
    for r in rows.values():
        r["ratio_vs_plain"] = round(r["tokens_per_s"] / base, 3)
    print(f"{'run':26s} {'docs':>6s} {'tokens':>10s} {'s':>7s} {'tokens/s':>10s} {'x plain':>8s}")
    for k, r in rows.items():
        print(f"{k:26s} {r['docs']:6d} {r['tokens']:10d} {r['seconds']:7.2f} {r['tokens_per_s']:10d} {r['ratio_vs_plain']:8.3f}")
    print(f"text: {mb:.1f} MB in {len(shards)} shards; train.bin identical for 1 and 2 workers: {len(shas) == 1}")
    print(json.dumps({"bench": "mix", "text_mb": round(mb, 1), "cpus": os.cpu_count(), "vocab": args.vocab,
                      "identical_1w_2w": len(shas) == 1, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
