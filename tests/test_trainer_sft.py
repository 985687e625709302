"""SFT shards (the curate-sft/1 contract) built here with ChatML: masks checked against the
assistant turns, packed rows keep examples apart, a tiny model learns the masked targets."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tokenizers import Tokenizer  # noqa: E402

from trainer.data import SFTData  # noqa: E402
from trainer.verify import VerifyOptions, verify  # noqa: E402

WORDS = "red green blue cat dog bird one two three sun moon star tree river stone cloud".split()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _conversation(rng: random.Random) -> list[tuple[str, str]]:
    turns = [("system", "You answer with the words reversed.")] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 3)):
        ask = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        turns += [("user", " ".join(ask)), ("assistant", " ".join(reversed(ask)))]
    return turns


def _render(tok: Tokenizer, turns) -> tuple[list[int], list[int]]:
    """ChatML, each piece encoded alone; mask 1 on assistant content and its <|im_end|>."""
    ids, mask = [], []
    for role, content in turns:
        for text, target in ((f"<|im_start|>{role}\n", 0), (content, role == "assistant"),
                             ("<|im_end|>", role == "assistant"), ("\n", 0)):
            e = tok.encode(text, add_special_tokens=False).ids
            ids += e
            mask += [int(target)] * len(e)
    return ids, mask


def make_sft(d: Path, base_tokenizer: Path, n_train: int = 120, n_val: int = 12, seed: int = 0) -> Path:
    """Write train/val .bin + .mask.bin + .idx, tokenizer.json and meta.json into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(base_tokenizer))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(d / "tokenizer.json"))
    rng = random.Random(seed)
    meta = {"format": "curate-sft/1", "dtype": "uint16", "context_length": 256,
            "tokenizer": {"file": "tokenizer.json", "sha256": _sha(d / "tokenizer.json"),
                          "vocab_size": tok.get_vocab_size(), "eos_id": tok.token_to_id("<|endoftext|>")},
            "template": {"name": "chatml", "sha256": hashlib.sha256(b"chatml").hexdigest()},
            "tasks": {"reverse": {"examples": n_train}}}
    for split, n in (("train", n_train), ("val", n_val)):
        ids, mask, starts = [], [], []
        for _ in range(n):
            a, m = _render(tok, _conversation(rng))
            starts.append(len(ids))
            ids += a
            mask += m
        stem = f"{split}-00000"
        np.asarray(ids, np.uint16).tofile(d / f"{stem}.bin")
        np.asarray(mask, np.uint8).tofile(d / f"{stem}.mask.bin")
        np.asarray(starts + [len(ids)], "<i8").tofile(d / f"{stem}.idx")
        f = {"path": f"{stem}.bin", "tokens": len(ids), "sha256": _sha(d / f"{stem}.bin"), "mask": f"{stem}.mask.bin",
             "mask_sha256": _sha(d / f"{stem}.mask.bin"), "idx": f"{stem}.idx", "idx_sha256": _sha(d / f"{stem}.idx"),
             "examples": n}
        meta[split] = {"tokens": len(ids), "examples": n, "files": [f]}
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    return d


def _rewrite_mask(d: Path, fn) -> None:
    meta = json.loads((d / "meta.json").read_text())
    for split in ("train", "val"):
        f = meta[split]["files"][0]
        m = np.fromfile(d / f["mask"], dtype=np.uint8)
        fn(m, np.fromfile(d / f["path"], dtype=np.uint16)).astype(np.uint8).tofile(d / f["mask"])
        f["mask_sha256"] = _sha(d / f["mask"])
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def sft(demo_run, tmp_path) -> Path:
    return make_sft(tmp_path / "run" / "sft", demo_run / "mix" / "tokenizer.json")


def _status(res):
    (checks,) = res.values()
    return {c.name: (c.status, c.reason) for c in checks}


def test_sft_shards_pass_and_masked_loss_falls(sft):
    res = verify(sft.parent, sft.parent / "verify", VerifyOptions(train_steps=40, threads=1, progress=False),
                 log=lambda *_: None)
    st = _status(res)
    assert set(st) == {"files", "tokenizer", "masks", "overlap", "training"}
    assert all(s == "pass" for s, _ in st.values()), st
    assert "exactly the assistant turns" in st["masks"][1]


def test_shifted_masks_fail(sft):
    _rewrite_mask(sft, lambda m, t: np.roll(m, 1))
    st = _status(verify(sft, sft.parent / "v", VerifyOptions(train_steps=0)))
    assert st["masks"][0] == "fail"
    assert "mask is the assistant spans shifted by +1 token" in st["masks"][1]


def test_user_token_as_target_fails(sft):
    def mark_first_user_word(m, t):
        m = m.copy()
        m[3] = 1  # inside the first turn (system or user), never an assistant token
        return m

    _rewrite_mask(sft, mark_first_user_word)
    st = _status(verify(sft, sft.parent / "v", VerifyOptions(train_steps=0)))
    assert st["masks"] == ("fail", st["masks"][1])
    assert "train-00000.bin example 0: first differs at token 3: a non-assistant token is a target" in st["masks"][1]


def test_packed_rows_keep_examples_apart(sft):
    data = SFTData(sft, block_size=256, batch_size=4, seed=0)
    meta = json.loads((sft / "meta.json").read_text())
    idx = set(np.fromfile(sft / "train-00000.idx", dtype="<i8").tolist())
    mask = np.fromfile(sft / "train-00000.mask.bin", dtype=np.uint8)
    assert data.truncated == 0 and sum(b - a for _, a, b in data.rows) == meta["train"]["tokens"]
    assert all(a in idx and b in idx and b - a <= 257 for _, a, b in data.rows)  # whole examples per row
    assert len(data.rows) < meta["train"]["examples"]  # several examples share a row
    b = data.batch(0)
    for r in range(b.x.shape[0]):
        seg, pos = b.seg[r], b.pos[r]
        starts = np.flatnonzero(np.diff(seg, prepend=-2) != 0)
        assert all(pos[s] == 0 for s in starts)  # positions restart at every example
        assert np.all(b.w[r][np.flatnonzero(np.diff(seg) != 0)] == 0)  # no target across a boundary
    # the weights select exactly the masked targets of whole examples
    k, a, e = data.rows[int(data.epochs.rows(0)[0])]
    y_w = b.w[0][: e - a - 1]
    assert np.array_equal(y_w, mask[a + 1 : e].astype(np.float32))


def _append_plain_example(d: Path, mask_value_at_3: int) -> None:
    """Append a text-only example (a pretraining share has no template markup) to the train split."""
    meta = json.loads((d / "meta.json").read_text())
    f = meta["train"]["files"][0]
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = np.asarray(tok.encode("plain text from the pretraining mixture, trained on in full", add_special_tokens=False).ids,
                     np.uint16)
    mask = np.ones(len(ids), np.uint8)
    mask[3] = mask_value_at_3
    with open(d / f["path"], "ab") as out:
        out.write(ids.tobytes())
    with open(d / f["mask"], "ab") as out:
        out.write(mask.tobytes())
    idx = np.fromfile(d / f["idx"], dtype="<i8")
    np.append(idx, idx[-1] + len(ids)).astype("<i8").tofile(d / f["idx"])
    f["tokens"] += len(ids)
    f["examples"] += 1
    for k in ("", "mask_", "idx_"):
        f[f"{k}sha256"] = _sha(d / f[{"": "path", "mask_": "mask", "idx_": "idx"}[k]])
    (d / "meta.json").write_text(json.dumps(meta))


def test_plain_text_examples_must_be_fully_targeted(sft):
    _append_plain_example(sft, 1)
    st = _status(verify(sft, sft.parent / "v", VerifyOptions(train_steps=0)))
    assert st["masks"][0] == "pass" and "1 plain-text examples (no template markup) fully targeted" in st["masks"][1]
    _append_plain_example(sft, 0)
    st = _status(verify(sft, sft.parent / "v", VerifyOptions(train_steps=0)))
    assert st["masks"][0] == "fail" and "plain text (no template markup) but not every token is a target" in st["masks"][1]
