"""Throughput of the pii stage vs a naive one-regex-per-type scrubber, on the same documents.

Document sets:
  * ``eval``: the 500 documents of ../shared/eval/pii (dense: ~6 identifiers per document);
  * ``web``: text of the first ``--web-docs`` HTML pages of ../shared/corpora/debian-docs
    (lxml ``text_content()``, i.e. with navigation; sparse, mostly technical prose).

For each set: MB/s on one core (best of ``--repeat`` runs, single process) of the stage's
``process()`` on an Arrow table (scrubbing, counts columns, stats), of the detector alone,
and of the naive loop (each type's regex ``sub`` over the whole text in turn), and the
stage/naive ratio. The last line is JSON.

Usage: .venv/bin/python bench/bench_pii.py [--web-docs 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.config import build_config  # noqa: E402
from stages.pii import Pii, PiiConfig  # noqa: E402

SHARED = ROOT.parent / "shared"
EVAL_DOCS = SHARED / "eval" / "pii" / "docs.jsonl"
WARC = SHARED / "corpora" / "debian-docs" / "part-00000.warc.gz"

# The baseline: one regular expression per type, each applied to the whole text in turn.
NAIVE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("SECRET", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----")),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    ("SECRET", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("SECRET", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("SECRET", re.compile(r"(?i)\b(?:api[_-]?key|token|secret|password|bearer)\b\s*[:=]?\s*['\"]?([A-Za-z0-9+/_\-]{16,})")),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")),
    ("IPV6", re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}\b")),
    ("IPV4", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("CN_ID", re.compile(r"\b\d{17}[\dXx]\b")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("PHONE", re.compile(r"(?:\+|\b00)\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b"
                         r"|\(?\b\d{2,4}\)?[ .-]\d{3,4}[ .-]?\d{3,4}\b")),
]


def naive_scrub(text: str) -> str:
    """The baseline scrubber: every type's pattern, one full pass each."""
    for tag, pat in NAIVE_PATTERNS:
        text = pat.sub(f"<{tag}>", text)
    return text


def eval_texts() -> list[str]:
    with open(EVAL_DOCS, encoding="utf8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def web_texts(limit: int) -> list[str]:
    from lxml import html
    from warcio.archiveiterator import ArchiveIterator

    out: list[str] = []
    with open(WARC, "rb") as f:  # warcio reads the gzip members itself
        for rec in ArchiveIterator(f):
            if rec.rec_type != "response":
                continue
            body = rec.content_stream().read()
            try:
                text = html.fromstring(body.decode("utf-8", errors="replace")).text_content()
            except Exception:  # lxml raises on empty or non-HTML bodies
                continue
            text = re.sub(r"[ \t]+", " ", re.sub(r"\n\s*\n+", "\n\n", text)).strip()
            if text:
                out.append(text)
            if len(out) >= limit:
                break
    return out


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_set(name: str, texts: list[str], repeat: int) -> dict:
    n = len(texts)
    table = pa.table({
        "id": [f"{name}-{i}" for i in range(n)], "text": texts, "url": [None] * n,
        "domain": [None] * n, "source": ["web"] * n,
    }, schema=pa.schema([("id", pa.string()), ("text", pa.string()), ("url", pa.string()),
                         ("domain", pa.string()), ("source", pa.string())]))
    stage = Pii(build_config(PiiConfig, {}, "bench"))
    stage.setup()
    det = stage.scrubber.detector
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    res = stage.process(table)
    t_stage = best_of(lambda: stage.process(table), repeat)
    t_detect = best_of(lambda: [det.detect(t) for t in texts], repeat)
    t_naive = best_of(lambda: [naive_scrub(t) for t in texts], repeat)
    return {
        "set": name, "docs": n, "mb": round(mb, 3), "hits": res.stats["pii.total"],
        "stage_mb_s": round(mb / t_stage, 2), "detect_mb_s": round(mb / t_detect, 2),
        "naive_mb_s": round(mb / t_naive, 2), "stage_over_naive": round(t_naive / t_stage, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--web-docs", type=int, default=300, help="HTML pages from the Debian WARC (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    rows = []
    if EVAL_DOCS.exists():
        rows.append(bench_set("eval", eval_texts(), args.repeat))
    if args.web_docs and WARC.exists():
        rows.append(bench_set("web", web_texts(args.web_docs), args.repeat))
    if not rows:
        print(f"no documents: neither {EVAL_DOCS} nor {WARC} exists", file=sys.stderr)
        return 2
    print(f"{'set':<6}{'docs':>6}{'MB':>8}{'hits':>7}{'stage MB/s':>12}{'detect MB/s':>13}"
          f"{'naive MB/s':>12}{'stage/naive':>13}")
    for r in rows:
        print(f"{r['set']:<6}{r['docs']:>6}{r['mb']:>8.2f}{r['hits']:>7}{r['stage_mb_s']:>12.2f}"
              f"{r['detect_mb_s']:>13.2f}{r['naive_mb_s']:>12.2f}{r['stage_over_naive']:>12.2f}x")
    print("(one process, one core; best of %d runs)" % args.repeat)
    print(json.dumps({"bench": "pii", "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
