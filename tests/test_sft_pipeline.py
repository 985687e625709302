"""The SFT pipeline end to end on the generated set: accounting, decontamination, masks after
packing, shares, determinism, export, and the trainer's reader on the shards."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from curate.runner import run_pipeline
from filters import bpe
from filters.chat_template import load_template, template_messages
from filters.mixplan import InfeasibleMixError
from samples.sftgen import generate, write_unigram_arpa
from stages.sft_mix import SftMixConfig, first_fit, mixture_plan


def fake_mix(d: Path, tok: Tokenizer, texts: list[str]) -> None:
    """A directory in the pretraining-mixture layout (curate-mixture/1) that sft-mix can read."""
    d.mkdir(parents=True)
    blob = tok.to_str()
    (d / "tokenizer.json").write_text(blob)
    ids = np.concatenate([np.asarray(e.ids + [0], np.uint16) for e in tok.encode_batch(texts)])
    ids.tofile(d / "train-00000.bin")
    (d / "meta.json").write_text(json.dumps({"format": "curate-mixture/1", "dtype": "uint16",
                                             "tokenizer": {"sha256": bpe.tokenizer_hash(blob)},
                                             "train": {"files": [{"path": "train-00000.bin", "tokens": len(ids)}]}}))


def spec(data: Path, models: dict, pretrain: dict | None) -> dict:
    files = ["llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
             "llama_factory/glaive_toolcall_en_demo.json", "alpaca/seed_tasks.jsonl", "fastchat/dummy_conversation.json"]
    mix = {"template": {"name": "chatml"}, "context_length": 512, "overlong": "truncate", "cap": 150,
           "tasks": {"glaive_toolcall": {"weight": 1.5, "max_epochs": 2}}, "val_fraction": 0.05,
           "tokenizer": {"vocab_size": 600}}
    if pretrain:
        mix["pretrain"] = pretrain
    return {"pipeline": "sft-test", "executor": "local", "workers": 1, "stages": {
        "sft-read": {"input": {"paths": [str(data / f) for f in files]}, "config": {"sources": {
            "alpaca_en_demo.json": {"format": "alpaca", "task": "alpaca_en", "lang": "en"},
            "alpaca_zh_demo.json": {"format": "alpaca", "task": "alpaca_zh", "lang": "zh"},
            "glaive_toolcall_en_demo.json": {"format": "sharegpt", "task": "glaive_toolcall", "lang": "en"},
            "seed_tasks.jsonl": {"format": "self_instruct", "task": "seed", "lang": "en"},
            "dummy_conversation.json": {"format": "sharegpt", "task": "chat", "lang": "en"}}}},
        "sft-clean": {"input": "sft-read", "config": {"eval_sets": [
            {"path": str(data / "fastchat/mt_bench_question.jsonl"), "name": "mt_bench"},
            {"path": str(data / "self_instruct/user_oriented_instructions.jsonl"), "name": "user_oriented"}]}},
        "sft-dedup": {"type": "dedup", "input": "sft-clean", "config": {"score_column": None}},
        "sft-select": {"input": "sft-dedup", "config": {"model_paths": models, "percentiles": [5, 95]}},
        "sft-mix": {"input": "sft-select", "config": mix},
    }}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    info = generate(root / "data")
    texts = []
    for f in ("llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json"):
        texts += [r.get("output", "") for r in json.loads((root / "data" / f).read_text())]
    write_unigram_arpa([t for t in texts if t.isascii()], root / "en.arpa")
    write_unigram_arpa([t for t in texts if not t.isascii()], root / "zh.arpa")
    models = {"en": str(root / "en.arpa"), "zh": str(root / "zh.arpa")}
    run = root / "run"
    manifests = run_pipeline(spec(root / "data", models, None), run, log=lambda *_: None)
    return {"root": root, "info": info, "models": models, "run": run, "m": manifests}


def _records_in(data: Path) -> int:
    n = 0
    for f in ("llama_factory/alpaca_en_demo.json", "llama_factory/alpaca_zh_demo.json",
              "llama_factory/glaive_toolcall_en_demo.json", "fastchat/dummy_conversation.json"):
        n += len(json.loads((data / f).read_text()))
    return n + sum(1 for ln in (data / "alpaca/seed_tasks.jsonl").read_text().splitlines() if ln.strip())


def _rows(run: Path, stage: str, rejected: bool = False) -> list[dict]:
    d = run / stage / ("rejected" if rejected else "")
    return [r for p in sorted(d.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_every_record_accounted_for(world):
    m = world["m"]
    assert m["sft-read"]["input_rows"] == _records_in(world["root"] / "data")
    prev = None
    for name in ("sft-read", "sft-clean", "sft-dedup", "sft-select", "sft-mix"):
        s = m[name]
        assert s["input_rows"] == s["kept_rows"] + s["rejected_rows"], name
        assert sum(s["reasons"].values()) == s["rejected_rows"]
        if prev is not None:
            assert s["input_rows"] == prev
        prev = s["kept_rows"]
    assert set(m["sft-read"]["reasons"]) == {"sft-read.bad_record", "sft-read.empty_field", "sft-read.missing_field",
                                             "sft-read.bad_role_order", "sft-read.unknown_role",
                                             "sft-read.no_assistant_end", "sft-read.bad_tool_call"}


def test_planted_contamination_rejected_with_eval_id(world):
    rej = _rows(world["run"], "sft-clean", rejected=True)
    got = {r["input_index"]: r["detail"] for r in rej if r["input_file"].endswith("alpaca_en_demo.json")}
    assert got == world["info"]["contaminated"]
    assert all(r["reason"] == "sft-clean.contaminated" for r in rej) and len(rej) == len(got)


def _targets(msgs: list[dict]) -> list[str]:
    out = []
    for m in template_messages(msgs):
        if m["role"] == "assistant":
            calls = "".join(
                f'<tool_call>{{"name": {json.dumps(c["function"]["name"])}, "arguments": '
                f'{json.dumps(c["function"]["arguments"], ensure_ascii=False)}}}</tool_call>'
                for c in m.get("tool_calls") or [])
            out.append(m["content"] + calls + "<|im_end|>")
    return out


def _segments(d: Path, f: dict, dtype) -> list[tuple[np.ndarray, np.ndarray]]:
    tok = np.fromfile(d / f["path"], dtype)
    mask = np.fromfile(d / f["mask"], np.uint8)
    idx = np.fromfile(d / f["idx"], "<i8")
    assert idx[0] == 0 and idx[-1] == len(tok) == len(mask) == f["tokens"] and len(idx) == f["examples"] + 1
    return [(tok[a:b], mask[a:b]) for a, b in zip(idx[:-1], idx[1:])]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def test_packed_masks_decode_to_exactly_the_assistant_turns(world):
    d = world["run"] / "sft-mix"
    meta = json.loads((d / "meta.json").read_text())
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    t = load_template("chatml")
    kept = _rows(world["run"], "sft-mix")
    by_text = {}
    for r in kept:
        msgs = template_messages(r["messages"])
        tools = json.loads(r["tools"]) if r["tools"] else None
        by_text[t.render(msgs, tools)] = (r, _targets(r["messages"]))
    dtype = np.dtype(meta["dtype"])
    seen = Counter()
    for split in ("train", "val"):
        for f in meta[split]["files"]:
            for ids, mask in _segments(d, f, dtype):
                text = tok.decode(ids.tolist(), skip_special_tokens=False)
                assert text in by_text, text[:200]
                row, expected = by_text[text]
                got = [tok.decode(ids[a:b].tolist(), skip_special_tokens=False) for a, b in _runs(mask)]
                assert got == expected
                assert len(ids) <= meta["context_length"]
                seen[(row["id"], split)] += 1
    for r in kept:
        assert seen[(r["id"], r["split"])] == (r["copies"] if r["split"] == "train" else 1)


def test_shares_meta_and_trainer_reader(world):
    d = world["run"] / "sft-mix"
    meta = json.loads((d / "meta.json").read_text())
    assert meta["format"] == "curate-sft/1" and meta["template"]["name"] == "chatml"
    tasks = meta["tasks"]
    assert sum(v["examples"] for v in tasks.values()) == meta["train"]["examples"]
    for name, v in tasks.items():
        assert abs(v["target_share"] - v["achieved_share"]) <= 0.01, name
        assert abs(v["achieved_share"] - v["examples"] / meta["train"]["examples"]) < 1e-9
    assert math.isclose(sum(v["target_share"] for v in tasks.values()), 1.0)
    assert tasks["glaive_toolcall"]["epochs"] > 1  # weight 1.5 upsamples it
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.token_to_id("<|im_start|>") == meta["tokenizer"]["vocab_size"] - 2
    data = pytest.importorskip("trainer.data")
    sd = data.SFTData(d, block_size=meta["context_length"], batch_size=4)
    assert sd.truncated == 0 and sd.n_rows > 0
    b = sd.batch(0)
    assert b.x.shape == (4, meta["context_length"])


def _outputs(d: Path) -> list[Path]:
    """Output files of a stage dir (not markers or manifests, which hold paths and times)."""
    return sorted(p.relative_to(d) for p in d.rglob("*")
                  if p.is_file() and not any(x.startswith("_") for x in p.relative_to(d).parts))


def test_rerun_byte_identical_and_export(world, tmp_path):
    spec_ = spec(world["root"] / "data", world["models"], None)
    run_pipeline(spec_, tmp_path / "again", log=lambda *_: None)
    for stage in ("sft-read", "sft-clean", "sft-select", "sft-mix"):
        a = world["run"] / stage
        b = tmp_path / "again" / stage
        files = _outputs(a)
        assert files and files == _outputs(b)
        for f in files:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f"{stage}/{f}"
    from curate.export import export_stage

    out = tmp_path / "mix.messages.jsonl"
    export_stage(world["run"], "sft-mix", "messages", out=out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == world["m"]["sft-mix"]["kept_rows"]
    assert all(x["messages"][-1]["role"] == "assistant" for x in lines)


def test_pretraining_share(world, tmp_path):
    tok = Tokenizer.from_file(str(world["run"] / "sft-mix" / "tokenizer.json"))
    base = bpe.train_bpe(["the quick brown fox jumps over the lazy dog"] * 50, 400)
    fake_mix(tmp_path / "mix", base, ["the quick brown fox jumps over the lazy dog " * 40] * 60)
    s = spec(world["root"] / "data", world["models"], {"mix": str(tmp_path / "mix"), "share": 0.1, "chunk_tokens": 64})
    m = run_pipeline(s, tmp_path / "run", log=lambda *_: None)["sft-mix"]
    meta = json.loads((tmp_path / "run" / "sft-mix" / "meta.json").read_text())
    assert abs(meta["tasks"]["pretrain"]["achieved_share"] - 0.1) <= 0.01
    assert meta["tokenizer"]["base"]["kind"] == "pretrain mix" and tok.get_vocab_size() != meta["tokenizer"]["vocab_size"]
    dtype = np.dtype(meta["dtype"])
    chunks = [ids for f in meta["train"]["files"] for ids, mask in _segments(tmp_path / "run" / "sft-mix", f, dtype)
              if mask.all()]
    assert len(chunks) == meta["tasks"]["pretrain"]["examples"] and all(len(c) == 64 for c in chunks)
    assert m["input_rows"] == m["kept_rows"] + m["rejected_rows"]


def test_feasibility_error_names_the_short_task():
    cfg = SftMixConfig(tasks={"b": {"weight": 5}})
    with pytest.raises(InfeasibleMixError, match="task 'b' is short"):
        mixture_plan(cfg, {"a": 100, "b": 10}, None)
    cfg = SftMixConfig(pretrain={"mix": "x/mix", "share": 0.5})
    with pytest.raises(InfeasibleMixError, match="'pretrain' is short"):
        mixture_plan(cfg, {"a": 100}, 20)
    p = mixture_plan(SftMixConfig(cap=30, tasks={"b": {"weight": 2, "max_epochs": 3}}), {"a": 100, "b": 20}, None)
    assert p["budget"] == 50 and p["tasks"]["a"]["examples"] + p["tasks"]["b"]["examples"] == 50
    assert abs(p["tasks"]["b"]["target_share"] - 40 / 70) < 1e-12


def test_first_fit_keeps_examples_whole():
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 100, 500)
    bins = first_fit(lens, 128, 8)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(lens[b].sum() <= 128 for b in bins)
    assert first_fit(np.array([200, 5]), 128, 4) == [[0], [1]]  # an over-long item stands alone


KILLS = [("sft-select", "filter", 1), ("sft-mix", "encode", 1), ("sft-mix", "pack", 0), ("sft-mix", "shards", 2)]


@pytest.mark.parametrize("stage,phase,k", KILLS, ids=[f"{s}:{p}:{k}" for s, p, k in KILLS])
def test_kill_in_phase_resumes_to_identical_bytes(world, tmp_path, stage, phase, k):
    import os
    import shutil
    import signal
    import subprocess
    import sys

    import yaml

    ref = world["run"]
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    order = ["sft-read", "sft-clean", "sft-dedup", "sft-select", "sft-mix"]
    for later in order[order.index(stage):]:
        shutil.rmtree(run / later)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(spec(world["root"] / "data", world["models"], None)))
    env = dict(os.environ, CURATE_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "curate.cli", "run", str(pipeline), "--run", str(run)]
    root = Path(__file__).resolve().parents[1]
    killed = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300,
                            env=dict(env, CURATE_FAULT=f"kill:{stage}:{phase}:{k}"))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not (run / stage / "_SUCCESS").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((run / stage / "_manifest.json").read_text()).get("resumed")  # finished phases skipped
    for name in order[order.index(stage):]:
        files = _outputs(ref / name)
        assert files == _outputs(run / name)
        for f in files:
            assert (ref / name / f).read_bytes() == (run / name / f).read_bytes(), f"{name}/{f}"


def test_ifd_column_with_a_trainer_checkpoint(world, tmp_path):
    torch = pytest.importorskip("torch")
    import shutil

    from stages.sft_select import IfdScorer, IfdSettings
    from trainer.model import GPT, ModelConfig, save_checkpoint

    tok = bpe.train_bpe(["the quick brown fox jumps over the lazy dog"] * 20, 300)
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt.pt", GPT(ModelConfig(vocab_size=tok.get_vocab_size(), block_size=64)), {})
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    shutil.rmtree(run / "sft-select")
    shutil.rmtree(run / "sft-mix")
    s = spec(world["root"] / "data", world["models"], None)
    s["stages"]["sft-select"]["config"]["ifd"] = {"checkpoint": str(tmp_path / "ckpt.pt"),
                                                  "tokenizer": str(tmp_path / "tokenizer.json")}
    run_pipeline(s, run, stages=["sft-select"], log=lambda *_: None)
    rows = _rows(run, "sft-select") + _rows(run, "sft-select", rejected=True)
    assert len(rows) == world["m"]["sft-select"]["input_rows"]
    ifd = [r["ifd"] for r in rows]
    assert all(v is not None and v > 0 and math.isfinite(v) for v in ifd)
    # The column is the scorer's value: recompute a few, and check the ratio's two parts directly.
    scorer = IfdScorer(IfdSettings(checkpoint=str(tmp_path / "ckpt.pt"), tokenizer=str(tmp_path / "tokenizer.json")))
    from filters.sft_formats import prompt_text, response_text

    for r in rows[:5]:
        assert scorer.score(prompt_text(r["messages"]), response_text(r["messages"])) == pytest.approx(r["ifd"])
    ids = tok.encode("the lazy dog").ids
    with torch.no_grad():
        logits = scorer.model(torch.tensor([[scorer.eos] + ids[:-1]]))[0]
    direct = float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids)))
    assert scorer._loss([scorer.eos] + ids, len(ids)) == pytest.approx(direct)


def test_encode_rejects_template_errors_and_truncates_by_whole_exchanges(tmp_path):
    import pyarrow as pa

    from stages.sft_mix import IDX, OK, TEMPLATE_ERROR, TOO_LONG, EncodeWorker
    from stages.sft_read import MESSAGE

    tpl = tmp_path / "strict.jinja"
    tpl.write_text(load_template("chatml").source.replace(
        "{%- for message in messages %}",
        "{%- for message in messages %}{% if message.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"))
    (tmp_path / "strict.json").write_text(json.dumps({"end_of_turn": "<|im_end|>",
                                                      "special_tokens": ["<|im_start|>", "<|im_end|>"]}))
    tok = bpe.train_bpe(["hello there friend " * 20], 300)
    from filters.chat_template import add_special_tokens

    add_special_tokens(tok, ["<|im_start|>", "<|im_end|>"])
    tok.save(str(tmp_path / "tok.json"))
    long_turn = "hello there friend " * 30
    convs = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}],
        [{"role": "system", "content": "be kind"}, {"role": "user", "content": long_turn},
         {"role": "assistant", "content": long_turn}, {"role": "user", "content": "short?"},
         {"role": "assistant", "content": "yes"}],
        [{"role": "user", "content": long_turn}, {"role": "assistant", "content": long_turn}],
    ]
    table = pa.table({"id": [f"x{i}" for i in range(4)], "task": ["t"] * 4,
                      "messages": pa.array(convs, pa.list_(MESSAGE)), "tools": [None] * 4})
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "in.parquet")
    cfg = SftMixConfig(template={"path": str(tpl)}, context_length=120, overlong="truncate").model_dump(mode="json")
    (tmp_path / "work").mkdir()
    res = EncodeWorker(str(tmp_path / "tok.json"), cfg, str(tmp_path / "work"), ["t"])(
        {"index": 0, "path": str(tmp_path / "in.parquet")})
    idx = np.fromfile(tmp_path / "work" / "idx-00000.bin", IDX)
    assert idx["status"].tolist() == [OK, TEMPLATE_ERROR, OK, TOO_LONG]
    assert idx["trunc"].tolist() == [0, 0, 2, 0]  # the long first exchange dropped, the system turn kept
    assert [r[1] for r in res["rejects"]] == ["sft-mix.template_error", "sft-mix.too_long"]
    assert "no tools here" in res["rejects"][0][2]
    toks = np.fromfile(tmp_path / "work" / "tok-00000.bin", np.uint16)
    o, n = int(idx["off"][2]), int(idx["len"][2])
    text = tok.decode(toks[o:o + n].tolist(), skip_special_tokens=False)
    assert text == "<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nshort?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
