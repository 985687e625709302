"""Throughput of the langid stage against a raw fastText predict loop on the same documents.

Documents: the sentences of ``../shared/eval/lid`` and a sample of pages of the
``../shared/corpora/debian-docs`` WARC (every ``--every``-th HTML response of each shard, main
text extracted with trafilatura with the extract stage's default options; cached under
``build/bench/``). Either set is skipped when ``../shared`` lacks it.

For each set the script reports docs/s per core (CPU time of this one thread) of
* the raw loop: ``model.predict(text.replace("\\n", " "), k=3)`` with the lid.176 model the
  stage loaded, one call per document, nothing else;
* the stage: ``stages.langid`` ``process()`` on an Arrow table of the same documents (all
  second-stage work, column building and the kept/rejected split included),
and the ratio of their times (the median of ``--rounds`` rounds). The stage reads at most
``max_chars`` (2000) characters of a document; for documents longer than that the raw loop
is also timed on the same capped input, which isolates the stage's own overhead. Each chunk
of documents is timed alternately by both, several times, keeping the fastest run of each
(see ``bench/eval_lid.py``), so that other work on a shared machine disturbs both sides
alike. The result is printed and written as JSON to ``build/bench/langid.json``.

Usage: python bench/bench_langid.py [--every 25] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_lid import load_items, make_table, median_round, paired_times, raw_loop  # noqa: E402
from filters.langid import normalize_for_lid  # noqa: E402
from stages.langid import LangId  # noqa: E402


def debian_sample(shared: Path, every: int, cache_dir: Path) -> pa.Table | None:
    """Main text of every ``every``-th HTML page of each debian-docs shard, cached."""
    corpus = shared / "corpora" / "debian-docs"
    shards = sorted(corpus.glob("part-*.warc.gz"))
    if not shards:
        return None
    cache = cache_dir / f"debian_docs_every{every}.parquet"
    if cache.is_file():
        return pq.read_table(cache)
    import trafilatura

    from curate.warc import iter_warc
    from stages.extract import decode_html

    ids, texts = [], []
    for shard in shards:
        n_html = 0
        for item in iter_warc(str(shard)):
            if item.rec_type != "response" or item.status != 200 or not item.body:
                continue
            ctype = item.http_headers.get("content-type", "")
            if "html" not in ctype.lower():
                continue
            n_html += 1
            if n_html % every:
                continue
            html, _, _ = decode_html(item.body, ctype)
            text = trafilatura.extract(html, include_comments=False, include_tables=True) if html else None
            if text:
                ids.append(f"{shard.name}#{item.offset}")
                texts.append(text)
    items = [{"id": i, "text": t} for i, t in zip(ids, texts)]
    table = make_table(items)
    cache_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, cache)
    return table


def measure(stage: LangId, table: pa.Table, repeat: int, rounds: int, chunk: int) -> dict:
    texts = table.column("text").to_pylist()
    model = stage.lid.fasttext.model
    chunks = [(texts[i : i + chunk], table.slice(i, chunk)) for i in range(0, len(texts), chunk)]
    timed = [
        paired_times(lambda c: raw_loop(model, c[0]), lambda c: stage.process(c[1]), chunks, repeat)
        for _ in range(rounds)
    ]
    t_raw, t_stage = median_round(timed)
    row = {}
    max_chars = stage.config.max_chars
    if any(len(t) > max_chars for t in texts if t):
        # The stage reads at most max_chars per document: the raw loop on that same input.
        capped = [(None if t is None else normalize_for_lid(t, max_chars)) for t in texts]
        cchunks = [(capped[i : i + chunk], table.slice(i, chunk)) for i in range(0, len(texts), chunk)]
        timed_c = [
            paired_times(lambda c: raw_loop(model, c[0]), lambda c: stage.process(c[1]), cchunks, repeat)
            for _ in range(rounds)
        ]
        tc_raw, tc_stage = median_round(timed_c)
        row = {
            "raw_capped_docs_per_s_per_core": round(len(texts) / tc_raw, 1),
            "stage_over_raw_capped_time": round(tc_stage / tc_raw, 3),
        }
    res = stage.process(table)
    methods = {k.removeprefix("method."): v for k, v in res.stats.items() if k.startswith("method.")}
    n = len(texts)
    return {
        "docs": n,
        "mean_chars": round(sum(map(len, texts)) / max(n, 1), 1),
        "raw_docs_per_s_per_core": round(n / t_raw, 1),
        "stage_docs_per_s_per_core": round(n / t_stage, 1),
        "stage_over_raw_time": round(t_stage / t_raw, 3),
        "stage_over_raw_time_rounds": [round(b / a, 3) for a, b in timed],
        **row,
        "decided_by": methods,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--every", type=int, default=25, help="take every N-th HTML page of each WARC shard")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs per chunk")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds; the median ratio is reported")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "langid.json")
    args = ap.parse_args(argv)

    stage = LangId(LangId.Config(min_score=0.0))
    t0 = time.perf_counter()
    stage.setup()
    setup_s = time.perf_counter() - t0

    sets: dict[str, pa.Table] = {}
    lid = args.shared / "eval" / "lid" / "sentences.jsonl"
    if lid.is_file():
        sets["lid_eval_sentences"] = make_table(load_items(lid))
    else:
        print(f"skipped eval sentences: {lid} is absent")
    docs = debian_sample(args.shared, args.every, ROOT / "build" / "bench")
    if docs is not None and docs.num_rows:
        sets["debian_docs_extracted"] = docs
    else:
        print("skipped debian-docs: no WARC shards under ../shared/corpora/debian-docs")
    if not sets:
        print("nothing to measure: ../shared is absent")
        return 0

    results = {"setup_seconds": round(setup_s, 2), "sets": {}}
    print(f"langid stage vs raw lid.176 predict loop (1 thread; setup {setup_s:.1f} s)")
    print(f"{'documents':24s}{'n':>6s}{'chars':>8s}{'raw docs/s':>12s}{'stage docs/s':>14s}{'ratio':>8s}")
    for name, table in sets.items():
        chunk = 500 if table.num_rows > 1000 else 100
        r = measure(stage, table, args.repeat, args.rounds, chunk)
        results["sets"][name] = r
        print(
            f"{name:24s}{r['docs']:6d}{r['mean_chars']:8.0f}{r['raw_docs_per_s_per_core']:12,.0f}"
            f"{r['stage_docs_per_s_per_core']:14,.0f}{r['stage_over_raw_time']:7.2f}x"
        )
        print(f"{'':24s}ratio per round: {r['stage_over_raw_time_rounds']}")
        if "stage_over_raw_capped_time" in r:
            print(
                f"{'':24s}raw loop on the same {stage.config.max_chars}-char input the stage reads: "
                f"{r['raw_capped_docs_per_s_per_core']:,.0f} docs/s, "
                f"ratio {r['stage_over_raw_capped_time']:.2f}x"
            )
        print(f"{'':24s}decided by: {r['decided_by']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
