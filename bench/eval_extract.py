"""Extraction quality on ../shared/eval/extraction (real news pages with ground truth).

Runs the extract stage with several trafilatura settings on pages.warc.gz and scores each
with the benchmark's own scorer (4-gram shingle F1). Pages the stage rejects count as empty.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "eval" / "extraction"

SETTINGS = {
    "precision": {"favor_precision": True},
    "balanced": {"favor_precision": False},
    "recall": {"favor_precision": False, "favor_recall": True},
    "fast": {"fast": True},
    "precision_fast": {"favor_precision": True, "fast": True},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    args = ap.parse_args()
    if not (EVAL / "pages.warc.gz").exists():
        print("SKIP: ../shared/eval/extraction is absent")
        return 0
    sys.path.insert(0, str(ROOT))
    from curate.config import build_config
    from stages.extract import Extract, ExtractConfig

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            st = Extract(build_config(ExtractConfig, SETTINGS[name], name))
            st.setup()
            res = st.process_source(str(EVAL / "pages.warc.gz"))
            out = Path(tmp) / f"{name}.jsonl"
            with out.open("w") as f:
                for r in res.kept.to_pylist():
                    f.write(json.dumps({"url": r["url"], "text": r["text"]}) + "\n")
            proc = subprocess.run([sys.executable, str(EVAL / "score.py"), "--pred", str(out)], capture_output=True, text=True)
            score = json.loads(proc.stdout.strip().splitlines()[-1])
            results[name] = {
                "kept": res.kept.num_rows,
                "rejected": res.rejected.num_rows,
                **{k: v for k, v in score.items() if k.startswith("shingle_") and not k.endswith("_std")},
            }
            print(name, json.dumps(results[name]))
    print(json.dumps({"eval": "extraction", "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
