"""DataTrove's own extractor on ../shared/eval/extraction (run with the DataTrove virtualenv).

``python bench/e2e_peer_f1.py EVAL_DIR OUT_DIR``: every response record of pages.warc.gz is decoded
as DataTrove's WarcReader decodes it (UTF-8, else the cchardet guess) and its Trafilatura step, as
datatrove_bench.py configures it (favour_precision), extracts the page (without the per-page
timeout); the benchmark's score.py scores the texts. The reader itself is not used: the eval WARC
has no WARC-Identified-Payload-Type, and libmagic's guess would drop most of its pages. Prints
``RESULT {json}`` with the shingle precision, recall and F1.
"""

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    import cchardet
    from datatrove.pipeline.extractors import Trafilatura
    from warcio.archiveiterator import ArchiveIterator

    eval_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = Trafilatura(favour_precision=True)
    pred = out_dir / "datatrove.jsonl"
    n = 0
    with pred.open("w") as f, (eval_dir / "pages.warc.gz").open("rb") as warc:
        for rec in ArchiveIterator(warc):
            if rec.rec_type != "response":
                continue
            body = rec.content_stream().read()
            try:
                html = body.decode("utf-8")
            except UnicodeDecodeError:
                html = body.decode(cchardet.detect(body)["encoding"] or "utf-8", errors="replace")
            text = extractor.extract(html) or ""
            f.write(json.dumps({"url": rec.rec_headers.get("WARC-Target-URI"), "text": text}) + "\n")
            n += 1
    proc = subprocess.run([sys.executable, str(eval_dir / "score.py"), "--pred", str(pred)],
                          capture_output=True, text=True, check=True)
    score = json.loads(proc.stdout.strip().splitlines()[-1])
    res = {"pages": n, **{k: v for k, v in score.items() if k.startswith("shingle_") and not k.endswith("_std")}}
    print("RESULT " + json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
