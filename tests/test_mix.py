"""The mix stage: source assignment, tokenisation, weights, epochs, validation split, packing."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from curate.config import build_config
from curate.errors import ConfigError
from curate.executors import LocalExecutor, get_executor
from curate.manifest import write_manifest, write_success
from curate.runner import run_pipeline
from curate.shardio import write_parquet
from curate.sql import query
from curate.runner import run_global_stage
from filters.mixplan import InfeasibleMixError
from stages.mix import MixConfig, MixStage, load_mixture

ROOT = Path(__file__).resolve().parents[1]
CATS = ("web", "wiki", "code", "forum")


def make_corpus(d: Path, n_shards: int = 3, per: int = 120, seed: int = 0) -> list[Path]:
    """Shards with core columns + lang: each category draws words from its own vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: ["".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(200)] for c in CATS}
    paths = []
    for i in range(n_shards):
        rows = []
        for k in range(per):
            c = rng.choice(("web", "web", "web", "wiki", "code", "forum"))
            zh = c == "forum" and k % 3 == 0
            rows.append(
                {
                    "id": f"doc-{seed}-{i}-{k}",
                    "text": " ".join(rng.choice(vocab[c]) for _ in range(rng.randint(10, 150))),
                    "url": f"https://{c}.example/{i}/{k}",
                    "domain": "stats.gov.cn" if zh else f"{c}.example",
                    "source": c,
                    "lang": "zh" if zh else "en",
                }
            )
        p = d / f"part-{i:05d}.parquet"
        write_parquet(pa.Table.from_pylist(rows), p)
        paths.append(p)
    return paths


def mixture(**over) -> dict:
    m = {
        "name": "t",
        "seed": 7,
        "budget_tokens": "max",
        "val_fraction": 0.03,
        "overlap": "first",
        "tokenizer": {"vocab_size": 600},
        "sources": {
            "zh-gov": {"where": "lang = 'zh' AND domain LIKE '%.gov.cn'", "weight": 0.1, "max_epochs": 4},
            "web": {"where": "source = 'web'", "weight": 0.5, "max_epochs": 1},
            "wiki": {"where": "source = 'wiki'", "weight": 0.25, "max_epochs": 3},
            "code": {"where": "source = 'code'", "weight": 0.15, "max_epochs": 2},
        },
    }
    m.update(over)
    return m


def run_mix(shards, out: Path, mix: dict | str, executor=None, **cfg) -> dict:
    config = build_config(MixConfig, {"mixture": mix, **cfg}, "test")
    ex = executor or LocalExecutor(1)
    return run_global_stage(MixStage(config, "mix"), list(shards), out, ex)


def stage_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.bin"))} | {
        "meta.json": (d / "meta.json").read_bytes(),
        "tokenizer.json": (d / "tokenizer.json").read_bytes(),
    }


def segments(path_list: list[Path], dtype, eos: int) -> list[bytes]:
    """Documents of packed files (split after each EOS), as raw bytes including the EOS."""
    arr = np.concatenate([np.fromfile(p, dtype=dtype) for p in path_list])
    ends = np.flatnonzero(arr == eos) + 1
    assert len(ends) and ends[-1] == len(arr), "a packed file must end with EOS"
    starts = np.concatenate(([0], ends[:-1]))
    return [arr[a:b].tobytes() for a, b in zip(starts, ends)]


def encode_corpus(shards, out: Path, mix: dict) -> tuple[dict[bytes, tuple[str, str]], np.dtype, int]:
    """Independent re-encoding: token bytes (with EOS) -> (source, id), using a Python source rule."""
    meta = json.loads((out / "meta.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.encode_special_tokens = True
    dtype, eos = np.dtype(meta["dtype"]), meta["tokenizer"]["eos_id"]
    table = pa.concat_tables([pq.read_table(p) for p in shards]).to_pylist()
    out_map = {}
    for r in table:
        src = python_source(r)
        if src is None:
            continue
        ids = tok.encode(r["text"], add_special_tokens=False).ids + [eos]
        out_map[np.asarray(ids, dtype).tobytes()] = (src, r["id"])
    return out_map, dtype, eos


def python_source(r: dict) -> str | None:
    if r["lang"] == "zh" and r["domain"].endswith(".gov.cn"):
        return "zh-gov"
    return r["source"] if r["source"] in ("web", "wiki", "code") else None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def maxrun(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("maxrun") / "mix"
    body = run_mix(corpus, out, mixture())
    return out, body


def test_weights_epochs_and_independent_recount(corpus, maxrun):
    out, body = maxrun
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "curate-mixture/1" and meta["dtype"] == "uint16"
    assert meta["tokenizer"]["vocab_size"] == 600
    assert body["mixture"]["train_tokens"] == meta["budget_tokens"] == meta["train"]["tokens"]
    # Every packed document is an input document of the right source (or the truncated cut).
    lookup, dtype, eos = encode_corpus(corpus, out, mixture())
    segs = segments([out / f["path"] for f in meta["train"]["files"]], dtype, eos)
    per: dict[str, int] = {}
    truncated = 0
    for s in segs:
        if s in lookup:
            src = lookup[s][0]
        else:
            body_bytes = s[: -dtype.itemsize]
            hits = [v[0] for k, v in lookup.items() if k.startswith(body_bytes)]
            assert hits, "a packed document matches no input document"
            src, truncated = hits[0], truncated + 1
        per[src] = per.get(src, 0) + len(s) // dtype.itemsize
    assert truncated <= sum(v["truncated_docs"] for v in meta["sources"].values())
    total = sum(per.values())
    assert total == meta["train"]["tokens"]
    for name, s in meta["sources"].items():
        assert per[name] == s["train_tokens"]
        assert abs(per[name] / total - s["target_weight"]) <= 0.01
        assert s["train_tokens"] <= s["train_tokens_available"] * s["max_epochs"]
    # The web cap binds at budget=max; wiki needs more than one epoch here.
    assert meta["sources"]["web"]["epochs"] == pytest.approx(1.0)
    assert meta["sources"]["wiki"]["epochs"] > 1


def test_upsampled_docs_repeat_whole_epochs(corpus, maxrun):
    out, _ = maxrun
    meta = json.loads((out / "meta.json").read_text())
    lookup, dtype, eos = encode_corpus(corpus, out, mixture())
    segs = segments([out / f["path"] for f in meta["train"]["files"]], dtype, eos)
    counts: dict[str, int] = {}
    for s in segs:
        if s in lookup and lookup[s][0] == "wiki":
            counts[lookup[s][1]] = counts.get(lookup[s][1], 0) + 1
    e = meta["sources"]["wiki"]["epochs"]
    assert set(counts.values()) <= {int(np.floor(e)), int(np.floor(e)) + 1}
    assert len(counts) == meta["sources"]["wiki"]["train_docs"]


def test_fixed_budget_and_infeasible(corpus, maxrun, tmp_path):
    _, body = maxrun
    bmax = body["mixture"]["budget_tokens"]
    b = run_mix(corpus, tmp_path / "ok" / "mix", mixture(budget_tokens=int(bmax * 0.7)))
    for n, w in b["mixture"]["target_weights"].items():
        assert abs(b["mixture"]["achieved_weights"][n] - w) <= 0.01
    assert b["mixture"]["train_tokens"] == int(bmax * 0.7)
    with pytest.raises(InfeasibleMixError) as e:
        run_mix(corpus, tmp_path / "bad" / "mix", mixture(budget_tokens=bmax * 2))
    msg = str(e.value)
    assert "'web' runs short" in msg and "max_epochs=1" in msg
    assert f"reachable up to a budget of {bmax:,}" in msg


def test_validation_split_per_source_and_disjoint(corpus, maxrun):
    out, _ = maxrun
    meta = json.loads((out / "meta.json").read_text())
    lookup, dtype, eos = encode_corpus(corpus, out, mixture())
    train_ids = {lookup[s][1] for s in segments([out / f["path"] for f in meta["train"]["files"]], dtype, eos) if s in lookup}
    val_files = {f["source"]: out / f["path"] for f in meta["val"]["files"]}
    assert set(val_files) == set(meta["sources"])
    for name, path in val_files.items():
        vsegs = segments([path], dtype, eos)
        assert all(lookup[s][0] == name for s in vsegs)
        assert len(vsegs) == meta["sources"][name]["val_docs"] >= 1
        assert not {lookup[s][1] for s in vsegs} & train_ids


def test_same_seed_same_bytes_other_seed_other_order(corpus, maxrun, tmp_path):
    out, _ = maxrun
    run_mix(corpus, tmp_path / "again" / "mix", mixture())
    assert stage_bytes(tmp_path / "again" / "mix") == stage_bytes(out)
    run_mix(corpus, tmp_path / "seed" / "mix", mixture(seed=8))
    other = stage_bytes(tmp_path / "seed" / "mix")
    assert other["train-00000.bin"] != stage_bytes(out)["train-00000.bin"]
    # The validation split depends on the document ids only, not on the seed.
    assert {k: v for k, v in other.items() if k.startswith("val-")}.keys() == {
        k for k in stage_bytes(out) if k.startswith("val-")
    }
    m1 = json.loads((out / "meta.json").read_text())["sources"]
    m2 = json.loads((tmp_path / "seed" / "mix" / "meta.json").read_text())["sources"]
    assert {n: s["val_docs"] for n, s in m1.items()} == {n: s["val_docs"] for n, s in m2.items()}


def test_unassigned_counted_and_rejected(corpus, maxrun):
    out, body = maxrun
    rows = pa.concat_tables([pq.read_table(p) for p in corpus]).to_pylist()
    expect = sum(python_source(r) is None for r in rows)
    assert expect > 0
    assert body["accounting"]["unassigned"] == body["rejected_rows"] == expect
    assert body["input_rows"] == len(rows) == body["kept_rows"] + body["rejected_rows"]
    assert body["conservation"] == "n/a"
    rej = pa.concat_tables([pq.read_table(p) for p in sorted((out / "rejected").glob("*.parquet"))])
    assert rej.num_rows == expect and set(rej.column("reason").to_pylist()) == {"mix.unassigned"}
    assert sum(body["accounting"]["docs_per_source"].values()) == len(rows) - expect


def test_overlap_error_or_first_match(corpus, tmp_path):
    m = mixture(overlap="error")
    with pytest.raises(ConfigError, match="match more than one source.*zh-gov.*forum|overlap: first"):
        run_mix(corpus, tmp_path / "o" / "mix", {**m, "sources": {**m["sources"], "forum": {"where": "source = 'forum'", "weight": 0.1}}})
    # Disjoint predicates are fine with overlap: error.
    disjoint = mixture(overlap="error")
    disjoint["sources"]["web"]["where"] = "source = 'web' AND NOT (lang = 'zh' AND domain LIKE '%.gov.cn')"
    b = run_mix(corpus, tmp_path / "d" / "mix", disjoint)
    assert b["accounting"]["overlap_docs"] == 0


def test_mixture_file_errors_name_key_and_file(tmp_path, corpus):
    f = tmp_path / "m.yaml"
    f.write_text("name: x\nbudget_tokens: 10\nwieght: 1\nsources:\n  a: {where: 'true', weight: 1}\n")
    with pytest.raises(ConfigError) as e:
        build_config(MixConfig, {"mixture": str(f)}, "pipeline.yaml")
    assert "'wieght'" in str(e.value) and str(f) in str(e.value)
    f.write_text("name: x\nbudget_tokens: 10\nsources:\n  a: {where: 'true', weight: 1, max_epoch: 2}\n")
    with pytest.raises(ConfigError, match="sources.a.max_epoch"):
        build_config(MixConfig, {"mixture": str(f)}, "pipeline.yaml")
    f.write_text("name: x\nbudget_tokens: 10\nsources:\n  a: {where: 'true', weight: 1}\n")
    assert build_config(MixConfig, {"mixture": str(f)}, "pipeline.yaml").mixture.sources["a"].max_epochs == 1
    with pytest.raises(ConfigError, match="unknown key 'extra' in pipeline.yaml"):
        build_config(MixConfig, {"mixture": str(f), "extra": 1}, "pipeline.yaml")
    with pytest.raises(ConfigError, match="mixture file not found"):
        build_config(MixConfig, {"mixture": str(tmp_path / "nope.yaml")}, "pipeline.yaml")
    bad = mixture()
    bad["sources"]["web"]["where"] = "sauce = 'web'"
    with pytest.raises(ConfigError, match="source 'web': bad `where`"):
        run_mix(corpus, tmp_path / "b" / "mix", bad)
    bad["sources"]["web"]["where"] = "source"
    with pytest.raises(ConfigError, match="not a boolean"):
        run_mix(corpus, tmp_path / "c" / "mix", bad)


def test_presets_load():
    files = sorted((ROOT / "manifests" / "mixtures").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"demo", "cpt_domain_1to5", "cpt_domain_1to10"} <= names
    for f in files:
        m = load_mixture(f)
        assert m.sources
    for r in (5, 10):
        m = load_mixture(ROOT / "manifests" / "mixtures" / f"cpt_domain_1to{r}.yaml")
        w = {n: s.weight for n, s in m.sources.items()}
        assert w["general"] / w["domain"] == r and m.overlap == "first"


def test_cpt_preset_ratio_on_corpus(corpus, tmp_path):
    path = ROOT / "manifests" / "mixtures" / "cpt_domain_1to5.yaml"
    m = load_mixture(path).model_dump(mode="json")
    m["tokenizer"]["vocab_size"] = 600
    b = run_mix(corpus, tmp_path / "cpt" / "mix", m)
    a = b["mixture"]["achieved_weights"]
    assert abs(a["domain"] - 1 / 6) <= 0.01 and abs(a["general"] - 5 / 6) <= 0.01
    assert b["accounting"]["unassigned"] == 0


def test_user_tokenizer_uint32_and_literal_eos(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<eos>"])  # id 70001
    tpath = tmp_path / "user_tokenizer.json"
    tok.save(str(tpath))
    rows = [
        {"id": f"d{i}", "text": f"w{i} w69999 <eos> w{i + 1}", "url": "u", "domain": "d", "source": "web", "lang": "en"}
        for i in range(40)
    ]
    shard = tmp_path / "in" / "part-00000.parquet"
    write_parquet(pa.Table.from_pylist(rows), shard)
    m = {"name": "u", "budget_tokens": "max", "val_fraction": 0.1, "tokenizer": {"path": str(tpath), "eos_token": "<eos>"},
         "sources": {"web": {"where": "true", "weight": 1}}}
    run_mix([shard], tmp_path / "run" / "mix", m)
    out = tmp_path / "run" / "mix"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["tokenizer"]["vocab_size"] == 70_002
    assert meta["tokenizer"]["eos_id"] == 70_001
    assert meta["tokenizer"]["sha256"] == __import__("hashlib").sha256(tpath.read_bytes()).hexdigest()
    assert meta["tokenizer"]["trained"] is False
    arr = np.fromfile(out / meta["train"]["files"][0]["path"], dtype=np.uint32)
    assert 70_000 in arr  # w69999: would overflow uint16
    # The literal "<eos>" in the text is not a document boundary: one EOS per document.
    assert (arr == 70_001).sum() == meta["sources"]["web"]["train_docs"]
    assert (arr == 0).sum() == meta["sources"]["web"]["train_docs"]  # the literal became [UNK]


def test_resume_after_interrupted_pack(corpus, maxrun, tmp_path):
    out = tmp_path / "r" / "mix"
    run_mix(corpus, out, mixture(), keep_work=True)
    work = out / "_work"
    assert (work / "tokenise" / "00001.json").exists()
    # Simulate a kill after phase 1 of shards 0 and 2: outputs gone, shard 1's marker gone.
    for p in list(out.glob("*.bin")) + [out / "meta.json", work / "tokenise" / "00001.json"]:
        p.unlink()
    calls = []

    class Counting(LocalExecutor):
        def map(self, worker_cls, init_args, tasks, desc=""):
            calls.extend(t["index"] for t in tasks)
            return super().map(worker_cls, init_args, tasks, desc)

    run_mix(corpus, out, mixture(), executor=Counting(1), keep_work=True)
    assert calls == [1]
    assert stage_bytes(out) == stage_bytes(maxrun[0])


def test_pipeline_and_sql(corpus, tmp_path):
    run_dir = tmp_path / "run"
    up = run_dir / "docs"
    up.mkdir(parents=True)
    for p in corpus:
        shutil.copy(p, up / p.name)
    write_manifest(up, {"stage": "docs"})
    write_success(up, "x", "y")
    mfile = tmp_path / "mix.yaml"
    import yaml

    mfile.write_text(yaml.safe_dump(mixture()))
    spec = {
        "pipeline": "t",
        "executor": "local",
        "workers": 1,
        "stages": {"docs": {"type": "extract", "input": {"paths": ["(seeded)"]}}, "mix": {"input": "docs", "config": {"mixture": str(mfile)}}},
    }
    res = run_pipeline(spec, run_dir, stages=["mix"], log=lambda *_: None)
    man = res["mix"]
    assert man["config"]["mixture_file"] == str(mfile)
    assert man["config"]["mixture"]["sources"]["web"]["weight"] == 0.5
    cols, rows = query(run_dir, "SELECT source, train_tokens, achieved_weight FROM mix_sources ORDER BY source")
    assert cols == ["source", "train_tokens", "achieved_weight"]
    assert [r[0] for r in rows] == sorted(mixture()["sources"])
    meta = json.loads((run_dir / "mix" / "meta.json").read_text())
    assert {r[0]: r[1] for r in rows} == {n: s["train_tokens"] for n, s in meta["sources"].items()}
    _, rej = query(run_dir, "SELECT count(*) FROM mix_rejected WHERE reason = 'mix.unassigned'")
    assert rej[0][0] == man["rejected_rows"] > 0
    # A changed mixture file changes the config hash: the finished stage is not silently reused.
    mfile.write_text(yaml.safe_dump(mixture(seed=99)))
    with pytest.raises(Exception, match="different config"):
        run_pipeline(spec, run_dir, stages=["mix"], log=lambda *_: None)


@pytest.mark.ray
def test_ray_and_local_byte_identical(corpus, maxrun, tmp_path):
    ex = get_executor("ray", 2)
    try:
        run_mix(corpus, tmp_path / "ray" / "mix", mixture(), executor=ex)
    finally:
        ex.close()
    assert stage_bytes(tmp_path / "ray" / "mix") == stage_bytes(maxrun[0])


def test_driver_memory_flat_in_corpus_size(tmp_path, corpus):
    """Python/numpy peak memory of the whole stage (local executor) does not grow with shard count."""
    import tracemalloc

    run_mix(corpus, tmp_path / "warm" / "mix", mixture())  # imports and caches outside the measurement
    peaks = {}
    for n in (4, 16):
        shards = make_corpus(tmp_path / f"in{n}", n_shards=n, per=120, seed=1)
        tracemalloc.start()
        run_mix(shards, tmp_path / f"m{n}" / "mix", mixture())
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[16] < 1.3 * peaks[4], peaks


def test_empty_and_all_unassigned_shards(corpus, tmp_path):
    schema = pq.read_schema(corpus[0])
    empty = tmp_path / "part-empty.parquet"
    write_parquet(schema.empty_table(), empty)
    other = tmp_path / "part-other.parquet"
    rows = [{"id": f"x{i}", "text": None if i == 0 else "books only", "url": "u", "domain": "d", "source": "books",
             "lang": "en"} for i in range(5)]
    write_parquet(pa.Table.from_pylist(rows, schema=schema), other)
    shards = [empty, *corpus, other]
    b = run_mix(shards, tmp_path / "e" / "mix", mixture())
    ref = run_mix(corpus, tmp_path / "ref" / "mix", mixture())
    assert b["accounting"]["unassigned"] == ref["accounting"]["unassigned"] + 5
    assert b["mixture"]["train_tokens"] == ref["mixture"]["train_tokens"]
    assert b["mixture"]["achieved_weights"] == ref["mixture"]["achieved_weights"]
