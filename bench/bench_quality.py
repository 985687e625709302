"""Quality throughput per core: the quality (heuristics) and perplexity stages side by side
with the raw ``kenlm`` score loop on the same documents.

Documents: the extracted text of the sample crawl (``samples.samplegen``; generated into a
temporary folder unless ``--sample`` names one), repeated ``--repeat`` times (new ids) so the
timings are long enough, in ``--shards`` shards. Models: ``train-lm`` on the crawl's ``wiki``
pages (needs ``lmplz``: ``make lmplz``). The language is the pages' ``<html lang>``.
Everything runs in one process (local executor, one worker), so docs/s is per core.

Rows (best of ``--rounds``):

* ``raw_kenlm_score_loop``: ``kenlm.Model.score`` on every line of every scored document,
  given the lines exactly as the model sees them (prepared beforehand, not timed): the
  library call alone.
* ``plain_prepare_and_score``: ``filters.kenlm_lm.prepare_lines`` + ``score`` per document,
  in memory: the same work without Arrow, shards or the runner.
* ``perplexity_stage``: the perplexity stage through ``run_pipeline`` (both passes, Parquet
  in and out, cut-offs, manifest).
* ``quality_stage``: the heuristics stage through ``run_pipeline``.
* ``quality_plus_perplexity``: the two stages' seconds added.

``x_raw`` is a row's seconds over the raw loop's (the stage's overhead over the raw calls);
``x_plain`` is over the plain loop's. Prints a table and one JSON line.
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
LANG = "html_lang"


def _pipeline(sample: Path) -> dict:
    from samples.samplegen import SOURCE_BY_DOMAIN

    return {
        "pipeline": "bench-quality",
        "executor": "local",
        "workers": 1,
        "stages": {
            "extract": {"input": {"paths": [str(sample)]}, "config": {"source_by_domain": SOURCE_BY_DOMAIN}},
            "train-lm": {"input": "extract",
                         "config": {"reference_source": "wiki", "lang_column": LANG, "memory": "500M"}},
            "docs": {"type": "extract", "input": {"paths": ["(seeded by the benchmark)"]}},
            "quality": {"input": "docs", "config": {"lang_column": LANG}},
            "perplexity": {"input": "docs",
                           "config": {"models_from": "train-lm", "lang_column": LANG, "keep_buckets": ["head", "middle"]}},
        },
    }


def _seed_docs(run: Path, repeat: int, shards: int):
    """Write the repeated extracted documents as a finished stage ``docs``; return the table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.manifest import write_success
    from curate.shardio import read_parquet, write_parquet

    base = pa.concat_tables([read_parquet(p) for p in sorted((run / "extract").glob("part-*.parquet"))])
    copies = []
    for k in range(repeat):
        ids = pc.binary_join_element_wise(base.column("id"), pa.scalar(f"#{k}"), "")
        copies.append(base.set_column(base.schema.get_field_index("id"), "id", ids))
    table = pa.concat_tables(copies)
    sdir = run / "docs"
    shutil.rmtree(sdir, ignore_errors=True)
    step = -(-table.num_rows // shards)
    for i in range(shards):
        write_parquet(table.slice(i * step, step), sdir / f"part-{i:05d}.parquet")
    write_success(sdir, "bench", "bench")
    return table


def _best(fn, rounds: int, before=None) -> float:
    best = float("inf")
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, help="a sample crawl folder (default: generate one)")
    ap.add_argument("--repeat", type=int, default=4, help="copies of the extracted documents")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("CURATE_NO_PROGRESS", "1")
    sys.path.insert(0, str(ROOT))

    from curate.errors import ConfigError
    from curate.runner import run_pipeline
    from filters.kenlm_lm import Scorer, prepare_lines
    from stages.train_lm import find_tool

    try:
        find_tool("lmplz")
    except ConfigError as e:
        print(f"SKIP: {e}")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = args.sample
        if sample is None:
            from samples import samplegen

            sample = tmp / "sample"
            samplegen.generate(sample, seed=0)
        run = tmp / "run"
        spec = _pipeline(sample)
        quiet = {"log": lambda *_: None}
        run_pipeline(spec, run, stages=["extract", "train-lm"], **quiet)
        table = _seed_docs(run, args.repeat, args.shards)
        models_dir = run / "train-lm" / "models"
        models = {p.stem: str(p) for p in models_dir.glob("*.bin")}

        texts = table.column("text").to_pylist()
        langs = table.column(LANG).to_pylist()
        scored = [(t, lg) for t, lg in zip(texts, langs) if t and lg in models]
        scorer = Scorer(models)
        loaded = {lg: scorer.model(lg) for lg in models}
        prepared = [(prepare_lines(t), lg) for t, lg in scored]

        def raw_loop():
            for lines, lg in prepared:
                score = loaded[lg].score
                for ln in lines:
                    score(ln)

        def plain_loop():
            for t, lg in scored:
                scorer.perplexity(t, lg)

        rows: dict[str, dict] = {}
        n_all, n_scored = table.num_rows, len(scored)
        def stage(name):
            return lambda: run_pipeline(spec, run, stages=[name], **quiet)

        def clear(name):
            return lambda: shutil.rmtree(run / name, ignore_errors=True)

        for name, fn, n, before in (
            ("raw_kenlm_score_loop", raw_loop, n_scored, None),
            ("plain_prepare_and_score", plain_loop, n_scored, None),
            ("perplexity_stage", stage("perplexity"), n_all, clear("perplexity")),
            ("quality_stage", stage("quality"), n_all, clear("quality")),
        ):
            secs = _best(fn, args.rounds, before)
            rows[name] = {"docs": n, "seconds": round(secs, 3), "docs_per_s": round(n / secs, 1)}
        both = rows["perplexity_stage"]["seconds"] + rows["quality_stage"]["seconds"]
        rows["quality_plus_perplexity"] = {"docs": n_all, "seconds": round(both, 3), "docs_per_s": round(n_all / both, 1)}
        # Overheads compare seconds per scored document (the stages also pass unscored ones on).
        raw_per_doc = rows["raw_kenlm_score_loop"]["seconds"] / n_scored
        plain_per_doc = rows["plain_prepare_and_score"]["seconds"] / n_scored
        for r in rows.values():
            per_doc = r["seconds"] / n_scored
            r["x_raw"] = round(per_doc / raw_per_doc, 2)
            r["x_plain"] = round(per_doc / plain_per_doc, 2)

    print(f"{'run':26s} {'docs':>6s} {'s':>8s} {'docs/s':>9s} {'x raw':>7s} {'x plain':>8s}")
    for k, r in rows.items():
        print(f"{k:26s} {r['docs']:6d} {r['seconds']:8.3f} {r['docs_per_s']:9.1f} {r['x_raw']:7.2f} {r['x_plain']:8.2f}")
    print(f"({n_scored} of {n_all} documents have a model for their language: "
          f"{', '.join(sorted(models))}; the rest pass through unscored)")
    print(json.dumps({"bench": "quality", "cpus": os.cpu_count(), "docs": n_all, "scored_docs": n_scored,
                      "models": sorted(models), "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
