"""bench-sft: examples/s of the SFT pipeline against a plain render + tokenise loop.

The data is ``../shared/sft`` when present (else the generated set of ``samples.sftgen``),
replicated ``--copies`` times with a per-copy tag in every prompt (so that prompt dedup keeps
them). The pipeline runs in-process (local executor, one worker) into a temporary run dir:
sft-read -> sft-clean (PII + decontamination) -> dedup -> sft-select (KenLM: a unigram model of
the data, see ``samples.sftgen.write_unigram_arpa``) -> sft-mix (render, masks, plan, pack)
with a BPE tokenizer trained beforehand (outside the timings).

Reference: a plain loop over the examples sft-mix received that renders each with the same
template in a plain HF-style Jinja environment and tokenises the texts with one
``encode_batch`` (no masks, no files). Reported: seconds and examples/s of the whole pipeline,
of sft-mix alone, and of the plain loop, and the ratios of their times per example.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.runner import run_pipeline  # noqa: E402
from filters.chat_template import load_template, make_environment, template_messages  # noqa: E402
from samples.sftgen import generate, write_unigram_arpa  # noqa: E402

FILES = {  # file -> (format, task, lang)
    "llama_factory/alpaca_en_demo.json": ("alpaca", "alpaca_en", "en"),
    "llama_factory/alpaca_zh_demo.json": ("alpaca", "alpaca_zh", "zh"),
    "llama_factory/glaive_toolcall_en_demo.json": ("sharegpt", "glaive_toolcall", "en"),
    "fastchat/dummy_conversation.json": ("sharegpt", "fastchat_dummy", "en"),
}


def replicate(src: Path, out: Path, copies: int) -> list[Path]:
    paths = []
    for rel in FILES:
        data = json.loads((src / rel).read_text(encoding="utf-8"))
        rows = []
        for c in range(copies):
            for r in data:
                r = json.loads(json.dumps(r))
                if "instruction" in r:
                    r["instruction"] = f"[{c}] {r['instruction']}"
                else:
                    r["conversations"][0]["value"] = f"[{c}] {r['conversations'][0]['value']}"
                rows.append(r)
        p = out / rel.replace("/", "_")
        p.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        paths.append(p)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=4)
    args = ap.parse_args()
    shared = ROOT.parent / "shared" / "sft"
    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    try:
        src = shared if shared.is_dir() else tmp / "gen"
        if not shared.is_dir():
            generate(src)
        files = replicate(src, tmp, args.copies)
        texts = [r.get("output", "") for r in json.loads(files[0].read_text())[:2000]]
        zh = [r.get("output", "") for r in json.loads(files[1].read_text())[:2000]]
        write_unigram_arpa(texts, tmp / "en.arpa")
        write_unigram_arpa(zh, tmp / "zh.arpa")
        from tokenizers import Tokenizer

        from filters import bpe

        sample = [r.get("output", "") for r in json.loads(files[0].read_text())]
        bpe.train_bpe(sample, 8192).save(str(tmp / "tokenizer.json"))
        sources = {p.name: {"format": FILES[k][0], "task": FILES[k][1], "lang": FILES[k][2]}
                   for p, k in zip(files, FILES)}
        spec = {"pipeline": "bench-sft", "executor": "local", "workers": 1, "stages": {
            "sft-read": {"input": {"paths": [str(p) for p in files]}, "config": {"sources": sources}},
            "sft-clean": {"input": "sft-read", "config": {"eval_sets": [
                {"path": str(src / "fastchat/mt_bench_question.jsonl"), "name": "mt_bench"},
                {"path": str(src / "self_instruct/user_oriented_instructions.jsonl"), "name": "user_oriented"}]}},
            "sft-dedup": {"type": "dedup", "input": "sft-clean", "config": {"score_column": None}},
            "sft-select": {"input": "sft-dedup", "config": {"model_paths": {"en": str(tmp / "en.arpa"),
                                                                            "zh": str(tmp / "zh.arpa")}}},
            "sft-mix": {"input": "sft-select", "config": {"template": {"name": "chatml"}, "context_length": 4096,
                                                          "tokenizer": {"path": str(tmp / "tokenizer.json")}}},
        }}
        t0 = time.perf_counter()
        m = run_pipeline(spec, tmp / "run", log=lambda *_: None)
        t_pipe = time.perf_counter() - t0
        n_in = m["sft-read"]["input_rows"]
        mix = m["sft-mix"]
        t_mix = mix["timings"]["seconds"]
        n_mix = mix["input_rows"]

        # The plain loop over the examples sft-mix received.
        rows = []
        for p in sorted((tmp / "run" / "sft-select").glob("part-*.parquet")):
            rows += pq.read_table(p, columns=["messages", "tools"]).to_pylist()
        tok = Tokenizer.from_file(str(tmp / "run" / "sft-mix" / "tokenizer.json"))
        tpl = make_environment().from_string(load_template("chatml").source)
        t1 = time.perf_counter()
        rendered = [tpl.render(messages=template_messages(r["messages"]),
                               tools=json.loads(r["tools"]) if r["tools"] else None, add_generation_prompt=False)
                    for r in rows]
        n_tok = sum(len(e.ids) for e in tok.encode_batch_fast(rendered, add_special_tokens=False))
        t_plain = time.perf_counter() - t1

        per = lambda t, n: t / max(n, 1)  # noqa: E731
        print("sft-mix phases (s):", mix["timings"].get("phases"))
        print(f"records in: {n_in}; examples into sft-mix: {n_mix}; plain loop tokens: {n_tok}")
        print(f"whole pipeline: {t_pipe:.2f} s, {n_in / t_pipe:.0f} examples/s")
        print(f"sft-mix stage : {t_mix:.2f} s, {n_mix / t_mix:.0f} examples/s")
        print(f"plain loop    : {t_plain:.2f} s, {n_mix / t_plain:.0f} examples/s")
        print(f"time per example, sft-mix / plain loop: {per(t_mix, n_mix) / per(t_plain, n_mix):.2f}x")
        print(f"time per example, whole pipeline / plain loop: {per(t_pipe, n_in) / per(t_plain, n_mix):.2f}x")
        print(json.dumps({"records": n_in, "mix_examples": n_mix, "pipeline_s": round(t_pipe, 3),
                          "mix_s": round(t_mix, 3), "plain_s": round(t_plain, 3),
                          "mix_over_plain": round(per(t_mix, n_mix) / per(t_plain, n_mix), 3),
                          "pipeline_over_plain": round(per(t_pipe, n_in) / per(t_plain, n_mix), 3)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
