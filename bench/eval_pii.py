"""Score the PII scrubber on ../shared/eval/pii with the set's own scorer.

Scrubs every gold document with the configured scrubber, writes ``{id, text}`` JSONL, runs
``score.py`` on it, prints the scorer's JSON line and a per-type recall table, and with
``--show-misses`` the gold spans that survived and the decoys that were damaged, with
context (for looking at failure classes, not for fitting items).

Usage: .venv/bin/python bench/eval_pii.py [--policy placeholder|pseudonym] [--naive] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters.pii import Scrubber  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval" / "pii"


def load(path: Path) -> list[dict]:
    with open(path, encoding="utf8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    ap.add_argument("--policy", default="placeholder", choices=["placeholder", "pseudonym"])
    ap.add_argument("--show-misses", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="keep the scrubbed JSONL here")
    ap.add_argument("--naive", action="store_true",
                    help="score the naive one-regex-per-type baseline of bench/bench_pii.py instead")
    args = ap.parse_args()

    gold_path = args.eval_dir / "docs.jsonl"
    if not gold_path.exists():
        print(f"no eval set at {gold_path}", file=sys.stderr)
        return 2
    gold = load(gold_path)
    if args.naive:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_pii import naive_scrub

        def scrub(text: str, doc_id: str) -> str:
            return naive_scrub(text)
    else:
        scrubber = Scrubber(policy=args.policy, key="eval-key")

        def scrub(text: str, doc_id: str) -> str:
            return scrubber.scrub(text, doc_id).text
    t0 = time.perf_counter()
    outs = [scrub(g["text"], g["id"]) for g in gold]
    dt = time.perf_counter() - t0
    mb = sum(len(g["text"].encode()) for g in gold) / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        pred = args.out or Path(tmp) / "pred.jsonl"
        with open(pred, "w", encoding="utf8") as f:
            for g, o in zip(gold, outs):
                f.write(json.dumps({"id": g["id"], "text": o}, ensure_ascii=False) + "\n")
        res = subprocess.run(
            [sys.executable, str(args.eval_dir / "score.py"), "--pred", str(pred), "--gold", str(gold_path)],
            capture_output=True, text=True, check=True,
        )
    line = res.stdout.strip().splitlines()[-1]
    score = json.loads(line)

    if args.show_misses:
        for g, o in zip(gold, outs):
            for s in g["spans"]:
                if s["type"] in ("person_name", "address"):
                    continue
                if s["text"] in o:
                    t = g["text"]
                    ctx = t[max(0, s["start"] - 50):s["start"]] + "[[" + s["text"] + "]]" + t[s["end"]:s["end"] + 20]
                    print(f"MISS {s.get('subtype', s['type'])} {g['locale']}: {ctx!r}")
            for d in g.get("decoys", []):
                if d["text"] not in o:
                    t = g["text"]
                    ctx = t[max(0, d["start"] - 40):d["start"]] + "[[" + d["text"] + "]]" + t[d["end"]:d["end"] + 20]
                    print(f"DECOY {d['type']} {g['locale']}: {ctx!r}")

    print(line)
    print(f"\nscrubbed {len(gold)} docs, {mb:.2f} MB in {dt:.2f} s ({mb / dt:.2f} MB/s, one core)")
    print(f"{'type':<16}{'recall':>8}")
    for k, r in score["recall_by_type"].items():
        print(f"{k:<16}{r:>8.4f}")
    print(f"{'decoys kept':<16}{score['decoy_preservation']:>8.4f}")
    if "collateral_char_rate" in score:
        print(f"{'collateral':<16}{score['collateral_char_rate']:>8.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
