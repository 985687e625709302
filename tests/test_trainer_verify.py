"""curate verify on the demo mixture: every check passes (a tiny model trains and its loss falls),
and each kind of broken mixture fails with its own reason."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from curate.cli import app  # noqa: E402
from trainer.verify import VerifyOptions, verify  # noqa: E402

FAST = VerifyOptions(train_steps=0, threads=1, progress=False)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def mix(demo_run, tmp_path) -> Path:
    """A private copy of the demo mixture to break."""
    d = tmp_path / "run" / "mix"
    shutil.copytree(demo_run / "mix", d)
    return d


def _status(res: dict) -> dict[str, tuple[str, str]]:
    (checks,) = res.values()
    return {c.name: (c.status, c.reason) for c in checks}


def _failed(res: dict) -> set[str]:
    return {n for n, (s, _) in _status(res).items() if s == "fail"}


def _rewrite_train(d: Path, keep_doc, extra: list[tuple[np.ndarray, int]] = ()) -> None:
    """Rewrite train-00000.bin and its sidecar from the documents ``keep_doc(src)`` accepts plus
    ``extra`` (tokens, source index), and update meta.json's counts and hashes to match (so only
    the property under test is wrong)."""
    meta = json.loads((d / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    (f,) = meta["train"]["files"]
    toks = np.fromfile(d / f["path"], dtype=dtype)
    side = np.load(d / f["docs"])
    docs = [(toks[o : o + n], int(s)) for o, n, s in zip(side["off"], side["len"], side["src"]) if keep_doc(int(s))]
    docs += list(extra)
    arr = np.concatenate([t for t, _ in docs]).astype(dtype)
    arr.tofile(d / f["path"])
    lens = np.array([len(t) for t, _ in docs])
    new = np.zeros(len(docs), side.dtype)
    new["len"], new["off"], new["src"] = lens, np.cumsum(lens) - lens, [s for _, s in docs]
    np.save(d / f["docs"], new)
    f.update(tokens=len(arr), sha256=_sha(d / f["path"]), docs_sha256=_sha(d / f["docs"]))
    meta["train"]["tokens"] = len(arr)
    names = meta["train_docs"]["sources"]
    for j, n in enumerate(names):
        meta["sources"][n]["train_tokens"] = int(lens[new["src"] == j].sum())
    (d / "meta.json").write_text(json.dumps(meta))


def test_demo_mixture_passes_and_a_tiny_model_learns(demo_run, tmp_path):
    res = verify(demo_run, tmp_path / "verify", VerifyOptions(train_steps=40, threads=1, progress=False), log=lambda *_: None)
    st = _status(res)
    assert set(st) == {"files", "tokenizer", "proportions", "overlap", "training"}
    assert all(s == "pass" for s, _ in st.values()), st
    meta = json.loads((demo_run / "mix" / "meta.json").read_text())
    reason = st["training"][1]
    for source in meta["sources"]:
        assert f"{source} " in reason  # per-source validation loss is reported
    summary = json.loads((tmp_path / "verify" / "mix" / "train" / "summary.json").read_text())
    a, b = summary["val_initial"], summary["val_final"]
    assert b["loss"] < a["loss"] and b["bpb"] < a["bpb"]
    assert all(b["sources"][s]["loss"] < a["sources"][s]["loss"] for s in meta["sources"])
    report = json.loads((tmp_path / "verify" / "mix" / "report.json").read_text())
    assert [c["status"] for c in report["checks"]] == ["pass"] * 5


def test_cli_verify_exit_codes(mix):
    cli = CliRunner()
    r = cli.invoke(app, ["verify", str(mix.parent), "--train-steps", "0", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "PASS tokenizer" in r.output and "SKIP training" in r.output
    (mix / "tokenizer.json").write_text((mix / "tokenizer.json").read_text().replace('"<|endoftext|>"', '"<|eot|>"'))
    r = cli.invoke(app, ["verify", str(mix.parent), "--train-steps", "0"])
    assert r.exit_code == 1
    assert "FAIL tokenizer: tokenizer.json has sha256" in r.output


def _small_tokenizer(n_vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tr = trainers.BpeTrainer(vocab_size=n_vocab, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["a small other corpus for another tokenizer"] * 20, trainer=tr)
    return tok


def test_wrong_tokenizer_fails_on_hash(mix):
    _small_tokenizer(300).save(str(mix / "tokenizer.json"))
    st = _status(verify(mix, mix.parent / "v", FAST))
    assert st["tokenizer"][0] == "fail" and "sha256" in st["tokenizer"][1]
    assert st["proportions"][0] == "skip" and st["training"][0] == "skip"


def test_wrong_tokenizer_with_matching_meta_fails_on_ids(mix):
    """A tokenizer swapped together with meta.json's hash and size: the shard ids give it away."""
    tok = _small_tokenizer(300)
    tok.save(str(mix / "tokenizer.json"))
    meta = json.loads((mix / "meta.json").read_text())
    meta["tokenizer"].update(sha256=_sha(mix / "tokenizer.json"), vocab_size=tok.get_vocab_size())
    (mix / "meta.json").write_text(json.dumps(meta))
    st = _status(verify(mix, mix.parent / "v", FAST))
    assert st["tokenizer"][0] == "fail"
    assert f">= vocabulary size {tok.get_vocab_size()}" in st["tokenizer"][1]


def test_skewed_proportions_fail_naming_the_source(mix):
    meta = json.loads((mix / "meta.json").read_text())
    web = meta["train_docs"]["sources"].index("web")
    seen = {"n": 0}

    def keep(src):  # keep one web document in ten
        if src != web:
            return True
        seen["n"] += 1
        return seen["n"] % 10 == 0

    _rewrite_train(mix, keep)
    res = verify(mix, mix.parent / "v", FAST)
    assert _failed(res) == {"proportions"}, _status(res)
    reason = _status(res)["proportions"][1]
    assert reason.startswith("web: ") and "vs target 25.0%" in reason


def test_sidecar_disagreeing_with_meta_fails(mix):
    meta = json.loads((mix / "meta.json").read_text())
    meta["sources"]["wiki"]["train_tokens"] += 100
    (mix / "meta.json").write_text(json.dumps(meta))
    st = _status(verify(mix, mix.parent / "v", FAST))
    assert st["proportions"] == ("fail", f"wiki: the sidecar has {meta['sources']['wiki']['train_tokens'] - 100} "
                                         f"train tokens, meta.json says {meta['sources']['wiki']['train_tokens']}")


def test_train_val_overlap_fails(mix):
    meta = json.loads((mix / "meta.json").read_text())
    dtype, eos = np.dtype(meta["dtype"]), meta["tokenizer"]["eos_id"]
    vf = next(f for f in meta["val"]["files"] if f["source"] == "wiki")
    val = np.fromfile(mix / vf["path"], dtype=dtype)
    doc = val[: int(np.flatnonzero(val == eos)[0]) + 1]  # the first wiki validation document, EOS included
    wiki = meta["train_docs"]["sources"].index("wiki")
    _rewrite_train(mix, lambda s: True, extra=[(doc, wiki)])
    res = verify(mix, mix.parent / "v", FAST)
    assert _failed(res) == {"overlap"}, _status(res)
    assert f"e.g. {vf['path']} doc 0 (100%)" in _status(res)["overlap"][1]
    assert _status(res)["overlap"][1].startswith("1 of ")


def test_corrupted_shard_fails_files(mix):
    meta = json.loads((mix / "meta.json").read_text())
    p = mix / meta["train"]["files"][0]["path"]
    b = bytearray(p.read_bytes())
    b[10] ^= 1
    p.write_bytes(bytes(b))
    st = _status(verify(mix, mix.parent / "v", FAST))
    assert st["files"] == ("fail", "1 problem(s), first: train-00000.bin: sha256 differs from meta.json")
