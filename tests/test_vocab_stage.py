"""The vocab stage end to end on the generated sample crawl.

extract -> langid -> mix0 (trains the base BPE) -> vocab (``input: [langid, mix0]``, the base
from mix0's output) -> mix (the cpt_domain_1to5 mixture of manifests/vocab.yaml, tokenised
with the extended tokenizer). A second run is killed inside the vocab stage's ``evaluate``
phase and resumed; its outputs must equal the first run's byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from curate.config import build_config
from curate.errors import ConfigError
from curate.executors import LocalExecutor
from curate.runner import run_global_stage, run_pipeline
from stages.mix import load_mixture
from stages.vocab import VocabConfig, VocabStage, heldout_mask

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("tokenizer.json", "id_map.json", "report.json", "report.md")


def _mixture() -> dict:
    spec = yaml.safe_load((ROOT / "manifests" / "vocab.yaml").read_text())
    return spec["stages"]["mix"]["config"]["mixture"]


def pipeline(corpus: Path, **vocab_over) -> dict:
    vocab = {"base_from": "mix0", "text_from": "langid", "domain_where": "lang = 'zh'",
             "general_where": "lang = 'en'", "max_new": 500, "heldout_fraction": 0.2}
    vocab.update(vocab_over)
    return {
        "pipeline": "vocab-test", "executor": "local", "workers": 1,
        "stages": {
            "extract": {"input": {"paths": [str(corpus)]}},
            "langid": {"input": "extract", "config": {"min_score": 0.5}},
            "mix0": {"type": "mix", "input": "langid", "config": {"mixture": {
                "name": "base", "budget_tokens": "max", "overlap": "first", "tokenizer": {"vocab_size": 1200},
                "sources": {"all": {"where": "true", "weight": 1}}}}},
            "vocab": {"input": ["langid", "mix0"], "config": vocab},
            "mix": {"input": "langid", "config": {"mixture": _mixture()}},
        },
    }


@pytest.fixture(scope="module")
def run_a(sample_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("vocab") / "a"
    run_pipeline(pipeline(sample_corpus), run, log=lambda *_: None)
    return run


def test_mixture_is_the_cpt_preset():
    preset = load_mixture(ROOT / "manifests" / "mixtures" / "cpt_domain_1to5.yaml")
    inline = _mixture()
    assert inline["name"] == preset.name and inline["tokenizer"] == {"from_stage": "vocab"}
    assert {n: (s["where"], s["weight"], s["max_epochs"]) for n, s in inline["sources"].items()} == {
        n: (s.where, s.weight, s.max_epochs) for n, s in preset.sources.items()}


def test_accounts_for_every_document_and_holds_out_by_id(run_a):
    man = json.loads((run_a / "vocab" / "_manifest.json").read_text())
    docs = man["accounting"]["docs"]
    langid = json.loads((run_a / "langid" / "_manifest.json").read_text())
    assert man["input_rows"] == langid["kept_rows"] == sum(docs.values())
    rows = duckdb.sql(f"SELECT id, lang FROM read_parquet('{run_a}/langid/part-*.parquet')").fetchall()
    held = heldout_mask([r[0] for r in rows], 0.2)
    zh = np.array([r[1] == "zh" for r in rows])
    en = np.array([r[1] == "en" for r in rows])
    assert docs["domain_heldout"] == int((zh & held).sum()) > 0
    assert docs["domain_train"] == int((zh & ~held).sum()) > docs["domain_heldout"]
    assert docs["general_heldout"] == int((en & held).sum()) > 0
    rep = json.loads((run_a / "vocab" / "report.json").read_text())
    assert rep["domain"]["docs"] == docs["domain_heldout"] and rep["training"]["docs"] == docs["domain_train"]


def test_extends_the_mix_tokenizer_and_mix_uses_it(run_a):
    base = Tokenizer.from_file(str(run_a / "mix0" / "tokenizer.json"))
    ext_path = run_a / "vocab" / "tokenizer.json"
    ext = Tokenizer.from_file(str(ext_path))
    old = base.get_vocab(with_added_tokens=True)
    new = ext.get_vocab(with_added_tokens=True)
    assert all(new[s] == i for s, i in old.items())
    idmap = json.loads((run_a / "vocab" / "id_map.json").read_text())
    assert idmap["tokenizer_sha256"] == hashlib.sha256(ext_path.read_bytes()).hexdigest()
    assert idmap["base_tokenizer_sha256"] == hashlib.sha256((run_a / "mix0" / "tokenizer.json").read_bytes()).hexdigest()
    assert idmap["base_vocab_size"] == len(old) and idmap["vocab_size"] == len(new) == len(old) + 500
    rep = json.loads((run_a / "vocab" / "report.json").read_text())
    assert rep["domain"]["tokens_after"] < rep["domain"]["tokens_before"]
    assert rep["general"]["docs_changed_share"] <= 0.01
    meta = json.loads((run_a / "mix" / "meta.json").read_text())
    assert meta["tokenizer"]["sha256"] == idmap["tokenizer_sha256"] and meta["tokenizer"]["source_stage"] == "vocab"
    assert (run_a / "mix" / "tokenizer.json").read_bytes() == ext_path.read_bytes()
    tokens = np.concatenate([np.fromfile(run_a / "mix" / f["path"], dtype=meta["dtype"]) for f in meta["train"]["files"]])
    assert (tokens >= idmap["base_vocab_size"]).any()  # the Chinese documents use the new pieces
    assert tokens.max() < idmap["vocab_size"]
    a = meta["sources"]
    assert abs(a["domain"]["achieved_weight"] - 1 / 6) <= 0.01


def test_killed_in_a_phase_resumes_to_the_same_bytes(run_a, sample_corpus, tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump(pipeline(sample_corpus)))
    run_b = tmp_path / "b"
    cmd = [sys.executable, "-m", "curate.cli", "run", str(spec), "--run", str(run_b)]
    env = dict(os.environ, CURATE_FAULT="kill:vocab:evaluate:0", CURATE_NO_PROGRESS="1")
    killed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0 and not (run_b / "vocab" / "_SUCCESS").exists()
    env.pop("CURATE_FAULT")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    man = json.loads((run_b / "vocab" / "_manifest.json").read_text())
    assert man["resumed"].get("count") and man["resumed"].get("learn")
    for name in OUTPUTS:
        assert (run_b / "vocab" / name).read_bytes() == (run_a / "vocab" / name).read_bytes(), name
    for f in sorted((run_a / "mix").glob("*.bin")):
        assert (run_b / "mix" / f.name).read_bytes() == f.read_bytes(), f.name


def test_bad_config_is_one_clear_error(run_a, sample_corpus, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of `base`"):
        run_pipeline(pipeline(sample_corpus, base="x.json"), tmp_path / "c", log=lambda *_: None)
    shards = sorted((run_a / "langid").glob("part-*.parquet"))

    def vocab(**cfg):
        stage = VocabStage(build_config(VocabConfig, cfg, "test"), "vocab")
        return run_global_stage(stage, shards, tmp_path / "r" / "vocab", LocalExecutor(1))

    with pytest.raises(ConfigError, match="base tokenizer not found"):
        vocab(base=str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a loadable tokenizer.json"):
        vocab(base=str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="bad `domain_where` predicate"):
        vocab(base=str(run_a / "mix0" / "tokenizer.json"), domain_where="no_such_column = 1")
    with pytest.raises(ConfigError, match="no domain training text"):
        vocab(base=str(run_a / "mix0" / "tokenizer.json"), domain_where="lang = 'xx'")
