"""Continued pretraining with an extended vocabulary vs the base tokenizer (issue 12, tiny, CPU).

Runs after ``bench/eval_vocab.py`` (its run directory holds ``read``, ``dedup`` and ``vocab`` on
GPT-2's BPE). A tiny model cannot afford GPT-2's 50k-row output layer on a shared CPU, so the
base here is a small BPE: ``mix-pre`` trains one (``--base-vocab``) and packs the base model's
pretraining data (general text with a little Chinese); ``vocab-small`` extends it with
``--max-new`` pieces learned on the Chinese text; ``mix-ext`` and ``mix-base`` are the same
domain:general = 1:5 mixture with the extended and the base tokenizer (the validation
documents are the same, chosen by the hash of their id). Then trains with ``trainer/``:

1. ``train-base``: a tiny GPT from scratch on ``mix-pre``;
2. from that checkpoint, at the same number of steps and tokens per step:
   ``cpt-ext`` (extended vocabulary, new rows = mean of their ``init_from`` rows),
   ``cpt-ext-random`` (extended vocabulary, each new row a copy of a randomly chosen base row),
   ``cpt-base`` (GPT-2's tokenizer, no new rows).

Held-out Chinese loss is compared in bits per byte of text (tokenizer-independent) on the
``domain`` validation source. Prints a table and writes ``<run>/cpt_vocab.json``; each arm's
``metrics.jsonl`` (the curves) is in its folder, where ``curate report <run>`` finds it.

Usage: ``python bench/cpt_vocab.py [--run build/vocab-eval/run] [--steps 300] [--base-steps 400]``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPT_SOURCES = {
    "domain": {"where": "lang = 'zh'", "weight": 1, "max_epochs": 4},
    "general": {"where": "true", "weight": 5, "max_epochs": 1},
}


def mixture(name: str, tokenizer: dict, sources: dict) -> dict:
    return {"name": name, "seed": 0, "budget_tokens": "max", "val_fraction": 0.01, "overlap": "first",
            "tokenizer": tokenizer, "sources": sources}


def add_stages(run: Path, gpt2: Path, max_new: int, base_vocab: int) -> None:
    """The eval run's stages plus a small base BPE (mix-pre), its extension (vocab-small) and
    the two CPT mixtures (a tiny model cannot afford GPT-2's 50k-row output layer on CPU)."""
    from curate.runner import run_pipeline

    spec = {
        "pipeline": "vocab-eval", "executor": "local", "workers": 1,
        "stages": {
            "read": {"input": {"paths": [str(ROOT / "build" / "vocab-eval" / "corpus")]},
                     "config": {"keep_columns": {"lang": "string"}}},
            "dedup": {"input": "read", "config": {"threshold": 0.8, "lsh_threshold": 0.7}},
            "vocab": {"input": "dedup", "config": {"base": str(gpt2), "max_new": 20_000}},
            "mix-pre": {"type": "mix", "input": "dedup", "config": {"mixture": mixture(
                "pretrain", {"vocab_size": base_vocab, "sample_bytes": 4_000_000},
                {"zh": {"where": "lang = 'zh'", "weight": 0.05, "max_epochs": 1},
                 "general": {"where": "true", "weight": 0.95, "max_epochs": 1}})}},
            "vocab-small": {"type": "vocab", "input": ["dedup", "mix-pre"],
                            "config": {"base_from": "mix-pre", "max_new": max_new, "heldout_fraction": 0.01}},
            "mix-ext": {"type": "mix", "input": "dedup", "config": {"mixture": mixture(
                "cpt_domain_1to5", {"from_stage": "vocab-small"}, CPT_SOURCES)}},
            "mix-base": {"type": "mix", "input": "dedup", "config": {"mixture": mixture(
                "cpt_domain_1to5", {"from_stage": "mix-pre"}, CPT_SOURCES)}},
        },
    }
    run_pipeline(spec, run, force=True, log=lambda *a: print(*a, file=sys.stderr))


def random_id_map(src: Path, dst: Path, seed: int = 0) -> None:
    """The id map with each new token's ``init_from`` replaced by one random base id (seeded)."""
    m = json.loads(src.read_text())
    rng = random.Random(seed)
    for t in m["new_tokens"]:
        t["init_from"] = [rng.randrange(m["base_vocab_size"])]
    dst.write_text(json.dumps(m))


def train(out: Path, data: Path, steps: int, extra: list[str]) -> None:
    shutil.rmtree(out, ignore_errors=True)  # a fresh run (a checkpoint left there would be resumed)
    cmd = [sys.executable, "-m", "trainer.train", "--config", str(ROOT / "trainer" / "configs" / "tiny.yaml"),
           "--data", str(data), "--out", str(out), "--max-steps", str(steps), "--eval-every", "50",
           "--eval-tokens", "0", "--device", "cpu", "--no-progress", *extra]
    print("$", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT)


def curve(metrics: Path, source: str = "domain") -> list[tuple[int, float]]:
    out = []
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "eval" and source in r.get("sources", {}):
            out.append((r["step"], r["sources"][source]["bpb"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "build" / "vocab-eval" / "run"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--max-new", type=int, default=4000)
    ap.add_argument("--base-vocab", type=int, default=4096)
    args = ap.parse_args()
    run = Path(args.run)
    gpt2 = ROOT / "build" / "gpt2" / "tokenizer.json"
    add_stages(run, gpt2, args.max_new, args.base_vocab)
    train(run / "train-base", run / "mix-pre", args.base_steps, [])
    base_ckpt = str(run / "train-base" / "ckpt.pt")
    random_id_map(run / "vocab-small" / "id_map.json", run / "id_map_random.json")
    arms = {
        "cpt-ext": (run / "mix-ext", ["--init-from", base_ckpt, "--id-map", str(run / "vocab-small" / "id_map.json")]),
        "cpt-ext-random": (run / "mix-ext", ["--init-from", base_ckpt, "--id-map", str(run / "id_map_random.json")]),
        "cpt-base": (run / "mix-base", ["--init-from", base_ckpt]),
    }
    rep = json.loads((run / "vocab-small" / "report.json").read_text())
    result = {"steps": args.steps, "base_steps": args.base_steps, "base_vocab": args.base_vocab,
              "pieces_added": rep["pieces_added"], "zh_token_ratio": rep["domain"]["token_ratio"], "arms": {}}
    for name, (data, extra) in arms.items():
        train(run / name, data, args.steps, extra)
        c = curve(run / name / "metrics.jsonl")
        result["arms"][name] = {"domain_bpb_curve": c, "start": c[0][1], "end": c[-1][1]}
    (run / "cpt_vocab.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| arm | held-out zh bits/byte at step 0 | at the end |")
    print("|---|---|---|")
    for name, r in result["arms"].items():
        print(f"| {name} | {r['start']:.4f} | {r['end']:.4f} |")
    steps = [s for s, _ in result["arms"]["cpt-ext"]["domain_bpb_curve"]]
    print("step " + " ".join(f"{s:>7}" for s in steps))
    for name, r in result["arms"].items():
        print(f"{name:<15}" + " ".join(f"{v:7.4f}" for _, v in r["domain_bpb_curve"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
