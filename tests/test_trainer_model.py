"""The model and its helpers: block-diagonal attention, checkpoints, vocabulary growth from an
id map (and continued training on it), bytes per token, the mix stage's document sidecar."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tokenizers import Tokenizer  # noqa: E402

from stages.mix import TokenWriter  # noqa: E402
from trainer.data import read_val_sets, token_bytes  # noqa: E402
from trainer.model import GPT, ModelConfig, load_checkpoint, save_checkpoint  # noqa: E402
from trainer.overlap import split_docs  # noqa: E402
from trainer.resize import grow_vocab  # noqa: E402
from trainer.train import TrainError, train  # noqa: E402


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_packed_segments_see_only_themselves(pos):
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, pos=pos)).eval()
    a, b = torch.randint(0, 50, (1, 6)), torch.randint(0, 50, (1, 9))
    packed = torch.cat([a, b], dim=1)
    seg = torch.tensor([[0] * 6 + [1] * 9])
    positions = torch.tensor([list(range(6)) + list(range(9))])
    with torch.no_grad():
        out = m(packed, segments=seg, positions=positions)
        alone = torch.cat([m(a), m(b)], dim=1)
        plain = m(packed)
    assert torch.allclose(out, alone, atol=1e-5)
    assert not torch.allclose(plain[:, 6:], alone[:, 6:], atol=1e-3)  # without segments, b sees a


def test_checkpoint_round_trip(tmp_path):
    m = GPT(ModelConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(tmp_path / "c.pt", m, {"tokenizer_sha256": "x"})
    m2, cfg = load_checkpoint(tmp_path / "c.pt")
    x = torch.randint(0, 40, (2, 8))
    assert cfg == m.config and m2(x).shape == (2, 8, 40)
    assert torch.equal(m.eval()(x), m2(x))


def test_grow_vocab_rows_are_means_of_their_pieces():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=8))
    id_map = {"format": "curate-vocab/1", "base_vocab_size": 30, "vocab_size": 32,
              "new_tokens": [{"id": 30, "token": "ab", "init_from": [3, 4]}, {"id": 31, "token": "abc", "init_from": [30 - 1]}]}
    g = grow_vocab(m, id_map)
    w, w0 = g.wte.weight.detach(), m.wte.weight.detach()
    assert g.config.vocab_size == 32 and torch.equal(w[:30], w0)
    assert torch.allclose(w[30], w0[[3, 4]].mean(0)) and torch.allclose(w[31], w0[29])
    assert torch.equal(g.blocks[0].fc.weight, m.blocks[0].fc.weight)
    with pytest.raises(ValueError, match="base model has 32 ids"):
        grow_vocab(g, id_map)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_continued_training_on_an_extended_vocabulary(demo_run, tmp_path):
    mix = demo_run / "mix"
    base = tmp_path / "base"
    small = dict(n_layer=1, n_head=2, n_embd=16, block_size=32, batch_size=4, eval_tokens=500, threads=1,
                 progress=False, warmup_steps=1)
    train({**small, "data": str(mix), "out": str(base), "max_steps": 3, "ckpt_every": 3, "eval_every": 3})

    # An extended mixture: the same shards with a tokenizer that has three more tokens.
    ext = tmp_path / "ext"
    shutil.copytree(mix, ext)
    tok = Tokenizer.from_file(str(mix / "tokenizer.json"))
    new = ["curation", "mixture", "tokenizer"]
    pieces = {t: tok.encode(t, add_special_tokens=False).ids for t in new}
    tok.add_tokens(new)
    tok.save(str(ext / "tokenizer.json"))
    meta = json.loads((ext / "meta.json").read_text())
    base_sha = meta["tokenizer"]["sha256"]
    meta["tokenizer"].update(sha256=_sha(ext / "tokenizer.json"), vocab_size=tok.get_vocab_size())
    (ext / "meta.json").write_text(json.dumps(meta))
    id_map = {"format": "curate-vocab/1", "base_tokenizer_sha256": base_sha, "tokenizer_sha256": meta["tokenizer"]["sha256"],
              "base_vocab_size": 4096, "vocab_size": tok.get_vocab_size(),
              "new_tokens": [{"id": tok.token_to_id(t), "token": t, "init_from": pieces[t]} for t in new]}
    (tmp_path / "id_map.json").write_text(json.dumps(id_map))

    cont = dict(small, data=str(ext), max_steps=2, ckpt_every=2, eval_every=2, init_from=str(base / "ckpt.pt"))
    with pytest.raises(TrainError, match="needs id_map"):
        train({**cont, "out": str(tmp_path / "x")})
    s = train({**cont, "out": str(tmp_path / "cont"), "id_map": str(tmp_path / "id_map.json")})
    assert s["steps"] == 2
    grown, cfg = load_checkpoint(tmp_path / "cont" / "ckpt.pt")
    assert cfg.vocab_size == 4099
    before, _ = load_checkpoint(base / "ckpt.pt")
    # the first continued step moved the rows a little; before it they were the piece means
    w0 = before.wte.weight.detach()
    assert torch.allclose(grown.wte.weight[4096], w0[pieces["curation"]].mean(0), atol=0.01)


def test_bytes_per_token_match_the_decoded_text(demo_run):
    mix = demo_run / "mix"
    meta = json.loads((mix / "meta.json").read_text())
    nb = token_bytes(mix / "tokenizer.json", meta["tokenizer"]["vocab_size"])
    tok = Tokenizer.from_file(str(mix / "tokenizer.json"))
    assert nb[meta["tokenizer"]["eos_id"]] == 0
    for src, v in read_val_sets(mix).items():
        for doc in split_docs(v, meta["tokenizer"]["eos_id"])[:3]:
            assert int(nb[doc].sum()) == len(tok.decode(doc.tolist()).encode("utf-8")), src


def test_doc_sidecar_splits_at_file_boundaries(tmp_path):
    w = TokenWriter(tmp_path, "train", np.dtype(np.uint16), shard_tokens=10, doc_sidecar=True)
    docs = [np.arange(1, n + 1, dtype=np.uint16) for n in (4, 9, 3, 12)]
    w.write(np.concatenate(docs[:2]), np.array([4, 9]), np.array([0, 1]))
    w.write(np.concatenate(docs[2:]), np.array([3, 12]), np.array([2, 0]))
    files = w.finish()
    assert [f["tokens"] for f in files] == [10, 10, 8]
    rows = [np.load(tmp_path / f["docs"]).tolist() for f in files]
    assert rows == [[(0, 4, 0), (4, 6, 1)], [(0, 3, 1), (3, 3, 2), (6, 4, 0)], [(0, 8, 0)]]
    assert all(f["docs_sha256"] == _sha(tmp_path / f["docs"]) for f in files)
    with pytest.raises(ValueError, match="lengths and sources"):
        TokenWriter(tmp_path, "t2", np.dtype(np.uint16), 10, doc_sidecar=True).write(np.zeros(3, np.uint16))
