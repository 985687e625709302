"""Shingling, MinHash (datasketch agreement), LSH parameters, exact Jaccard, pairing helpers."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters import minhash as mh

WORDS = [f"w{i}" for i in range(400)]


def _doc(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(rng: random.Random, text: str, rate: float) -> str:
    w = text.split()
    for i in range(len(w)):
        if rng.random() < rate:
            w[i] = rng.choice(WORDS)
    return " ".join(w)


def _ref_shingles(text: str, n: int = 5) -> list[str]:
    w = text.lower().split()
    if not w:
        return []
    if len(w) < n:
        return [" ".join(w)]
    return [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]


def _ref_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(_ref_shingles(a, n)), set(_ref_shingles(b, n))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


# --------------------------------------------------------------------------- hashing primitives


def test_fmix_matches_datasketch():
    from datasketch.minhash import _fmix

    x32 = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    x64 = np.random.default_rng(1).integers(0, 2**63, 1000, dtype=np.uint64)
    assert np.array_equal(mh.fmix32(x32), _fmix(x32, 32))
    assert np.array_equal(mh.fmix64(x64), _fmix(x64, 64))


def test_permutations_are_datasketchs():
    from datasketch import MinHash

    for num_perm, seed in [(128, 1), (64, 7), (256, 3)]:
        a, b = mh.affine32_permutations(num_perm, seed)
        pa, pb = MinHash(num_perm=num_perm, seed=seed).permutations
        assert np.array_equal(a, pa) and np.array_equal(b, pb)


def test_unicode_whitespace_list_is_str_split_s():
    import sys

    ws = "".join(chr(i) for i in range(128, sys.maxunicode + 1) if chr(i).isspace())
    assert ws == mh.UNICODE_WS
    assert [i for i in range(128) if chr(i).isspace()] == list(np.flatnonzero(mh._ASCII_WS[:128]))


_ALPHABET = "ab\u00e9\u0130\u03a3 \t\n\x1c\u00a0\u2003\u3000\u2029\u0085\u4e2d\u6587x\x00Z"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=60), min_size=1, max_size=8))
def test_word_shingles_are_lower_split_5grams(texts):
    """Shingle hashes follow text.lower().split() 5-grams: equal shingle strings <-> equal hashes."""
    sh = mh.Shingler(mode="word")
    batch = sh(texts)
    seen: dict[str, int] = {}
    back: dict[int, str] = {}
    for i, t in enumerate(texts):
        ref = _ref_shingles(t)
        got = batch.doc(i)
        assert len(got) == len(ref)
        for s, h in zip(ref, got.tolist()):
            assert seen.setdefault(s, h) == h
            assert back.setdefault(h, s) == s


def test_char_shingles_for_cjk_in_auto_mode():
    zh = "我们今天去公园散步然后回家吃饭晚上看书学习数学和历史课本"
    en = "the quick brown fox jumps over the lazy dog again and again"
    sh = mh.Shingler(mode="auto", char_ngram=5)
    batch = sh([zh, en, zh.replace("公园", "商店")])
    assert batch.char_mode.tolist() == [True, False, True]
    chars = "".join(zh.split())
    assert batch.counts[0] == len(chars) - 4
    assert batch.counts[1] == len(en.split()) - 4
    v, off = mh.sort_sets(batch.values, batch.offsets)
    j = mh.jaccard_pairs(v, off, [0], [2])[0]
    a = {chars[i : i + 5] for i in range(len(chars) - 4)}
    b2 = "".join(zh.replace("公园", "商店").split())
    b = {b2[i : i + 5] for i in range(len(b2) - 4)}
    assert j == pytest.approx(len(a & b) / len(a | b))
    # The word mode sees the whole Chinese sentence as one token: one shingle.
    assert mh.Shingler(mode="word")([zh]).counts.tolist() == [1]


def test_short_and_empty_documents():
    batch = mh.Shingler(mode="word")(["", "   ", "one two", "one two", "a b c d e f", None])
    assert batch.counts.tolist() == [0, 0, 1, 1, 2, 0]
    assert batch.doc(2).tolist() == batch.doc(3).tolist()
    sig = mh.MinHasher(16).signatures(batch.values, batch.offsets)
    assert (sig[0] == mh.MAX_HASH32).all() and (sig[2] != mh.MAX_HASH32).any()


def test_shingle_and_exact_hashes_are_pinned():
    """The hash values themselves decide the kept set: speed-ups must not change one bit."""
    import hashlib

    texts = ["", "   ", None, "one", "one two", "One TWO three four", "a b c d e", "a b c d e f g",
             "The quick brown fox\u3000jumps over\u00a0the lazy dog \u2028 again and AGAIN, Ünïcödé İstanbul ǅ",
             "我们今天去公园散步然后回家吃饭晚上看书学习数学和历史课本", "mixed 日本語のテキスト text here",
             "tab\tsep\nnew line\x1cfs  end "] * 3
    h = hashlib.sha256()
    for mode in ("word", "char", "auto"):
        for n in (1, 3, 5):
            b = mh.Shingler(mode=mode, word_ngram=n, char_ngram=n)(texts)
            h.update(b.values.tobytes())
            h.update(b.offsets.astype(np.int64).tobytes())
            h.update(mh.Shingler(mode=mode, word_ngram=n).exact_hashes(texts, ("lower", "whitespace"), b).tobytes())
    assert h.hexdigest() == "ea718f01f3b871c6f88feea9cf8f4311a884b51f59e425baab6027c69680ee91"


# --------------------------------------------------------------------------- MinHash vs datasketch


def test_signatures_equal_datasketch_given_the_same_shingle_hashes():
    """Same hash family: handing datasketch our 32-bit shingle hashes gives identical signatures."""
    from datasketch import MinHash

    rng = random.Random(0)
    texts = [_doc(rng, rng.randint(1, 300)) for _ in range(40)] + ["我们今天去公园散步然后回家吃饭"]
    sh = mh.Shingler(mode="auto")
    batch = sh(texts)
    hasher = mh.MinHasher(128, seed=1)
    sig = hasher.signatures(batch.values, batch.offsets)
    for i, t in enumerate(texts):
        if batch.char_mode[i]:
            s = "".join(t.lower().split())
            strs = [s[k : k + 5].encode() for k in range(len(s) - 4)]
        else:
            strs = [x.encode() for x in _ref_shingles(t)]
        table = dict(zip(strs, mh.MinHasher.hash32(batch.doc(i)).tolist()))
        m = MinHash(num_perm=128, seed=1, hashfunc=lambda b, table=table: table[b])
        m.update_batch(strs)
        assert np.array_equal(m.hashvalues, sig[i]), i


def test_jaccard_estimates_agree_with_datasketch_default():
    """Against datasketch's own sha1 hashing: both estimate the true Jaccard equally well."""
    from datasketch import MinHash

    rng = random.Random(1)
    base = [_doc(rng, 250) for _ in range(60)]
    rates = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    pairs = [(b, _edit(rng, b, rates[i % len(rates)])) for i, b in enumerate(base)]
    flat = [t for p in pairs for t in p]
    batch = mh.Shingler(mode="word")(flat)
    sig = mh.MinHasher(128).signatures(batch.values, batch.offsets)
    ours = mh.estimate_jaccard(sig[0::2], sig[1::2])
    ds, true = [], []
    for a, b in pairs:
        ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
        ma.update_batch([s.encode() for s in _ref_shingles(a)])
        mb.update_batch([s.encode() for s in _ref_shingles(b)])
        ds.append(ma.jaccard(mb))
        true.append(_ref_jaccard(a, b))
    ds, true = np.array(ds), np.array(true)
    sd = np.sqrt(np.maximum(true * (1 - true), 0.01) / 128)
    assert np.all(np.abs(ours - true) <= 4.5 * sd)
    assert np.all(np.abs(ours - ds) <= 6 * sd)
    assert abs(float(np.mean(ours - true))) < 0.02 and abs(float(np.mean(ours - ds))) < 0.02
    # Both estimators are equally close to the truth on average.
    assert abs(float(np.mean(np.abs(ours - true)) - np.mean(np.abs(ds - true)))) < 0.015


# --------------------------------------------------------------------------- exact hashing


def test_normalize_and_exact_hashes():
    steps = ("lower", "whitespace")
    assert mh.normalize_text("  Hello\u00a0  WORLD\n", steps) == "hello world"
    assert mh.normalize_text("ﬁ 1,2", ("nfkc", "punct", "digits")) == "fi 00"
    texts = ["Hello  world", "hello world", "hello world!", " HELLO\tWORLD ", "", None, "   "]
    h = mh.exact_hashes(texts, steps)
    keys = [tuple(x) for x in h.tolist()]
    assert keys[0] == keys[1] == keys[3]
    assert keys[2] != keys[0]
    assert keys[4] == keys[5] == keys[6]
    raw = mh.exact_hashes(texts, ())
    assert tuple(raw[0]) != tuple(raw[1])
    with pytest.raises(ValueError, match="unknown normalisation"):
        mh.exact_hashes(texts, ("stem",))


def test_exact_hashes_reuse_the_shingler_tokens():
    rng = random.Random(2)
    texts = [_doc(rng, rng.randint(0, 40)).upper() for _ in range(30)] + ["", "x"]
    sh = mh.Shingler(mode="word")
    batch = sh(texts)
    shared = sh.exact_hashes(texts, ("lower", "whitespace"), batch)
    assert np.array_equal(shared, mh.exact_hashes(texts, ("whitespace", "lower")))


# --------------------------------------------------------------------------- sets, Jaccard, LSH


def test_sort_sets_and_exact_jaccard_with_hash_prefix_collisions():
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    # Values sharing their high 32 bits exercise the exact recount of crowded keys.
    pool[50:100] = (pool[:50] & np.uint64(0xFFFFFFFF00000000)) | np.uint64(9)
    pool[:50] = (pool[:50] & np.uint64(0xFFFFFFFF00000000)) | np.uint64(7)
    sets = [rng.choice(pool[:150] if i % 3 == 0 else pool, rng.integers(0, 60)) for i in range(200)]
    values = np.concatenate(sets).astype(np.uint64)
    offsets = np.zeros(len(sets) + 1, np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    v, off = mh.sort_sets(values, offsets)
    for i, s in enumerate(sets):
        assert v[off[i] : off[i + 1]].tolist() == sorted(set(s.tolist()))
    ia, ib = rng.integers(0, len(sets), 2000), rng.integers(0, len(sets), 2000)
    got = mh.jaccard_pairs(v, off, ia, ib, max_elements=300)
    for g, x, y in zip(got, ia, ib):
        a, b = set(sets[x].tolist()), set(sets[y].tolist())
        assert g == (len(a & b) / len(a | b) if a | b else 1.0)


def test_jaccard_pairs_on_text_matches_reference():
    rng = random.Random(3)
    texts = [_doc(rng, 120) for _ in range(10)]
    texts += [_edit(rng, t, r) for t, r in zip(texts, [0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.0, 0.02, 0.04])]
    batch = mh.Shingler(mode="word")(texts)
    v, off = mh.sort_sets(batch.values, batch.offsets)
    ia, ib = np.arange(10), np.arange(10, 20)
    got = mh.jaccard_pairs(v, off, ia, ib)
    assert got == pytest.approx([_ref_jaccard(texts[a], texts[b]) for a, b in zip(ia, ib)], abs=1e-12)


def test_lsh_params_equal_datasketch():
    from datasketch import MinHashLSH

    checked = 0
    for th in (0.5, 0.6, 0.7, 0.75, 0.8, 0.9):
        for w in ((0.5, 0.5), (0.1, 0.9), (0.3, 0.7), (0.9, 0.1)):
            for n in (64, 128):
                try:
                    ref = MinHashLSH(threshold=th, num_perm=n, weights=w)
                except ValueError:  # datasketch refuses b < 2
                    continue
                assert mh.lsh_params(th, n, w) == (ref.b, ref.r), (th, w, n)
                checked += 1
    assert checked > 40
    b, r = mh.lsh_params(0.7, 128, (0.1, 0.9))
    assert mh.candidate_probability(0.8, b, r) > 0.99 > mh.candidate_probability(0.8, *mh.lsh_params(0.8, 128))


def _lsh_params_by_pow(threshold, num_perm, weights):
    """The choice over every shape with the pow integrals alone (what lsh_params refines)."""
    shapes = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], np.float64)
    b, r = shapes[:, :1], shapes[:, 1:]

    def simpson(lo, hi, miss):
        x = np.linspace(lo, hi, 2049)[None, :]
        y = 1.0 - (1.0 - x**r) ** b
        if miss:
            y = 1.0 - y
        w = np.ones(x.shape[1])
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        return (y * w).sum(axis=1) * (hi - lo) / (3 * (x.shape[1] - 1))

    err = weights[0] * simpson(0.0, threshold, False) + weights[1] * simpson(threshold, 1.0, True)
    best = int(np.argmin(err))
    return int(shapes[best, 0]), int(shapes[best, 1])


def test_lsh_params_equal_the_full_pow_integrals():
    for n in (1, 16, 128):
        for th in (0.1, 0.3, 0.5, 0.7, 0.8, 0.95):
            for w in ((0.5, 0.5), (0.1, 0.9), (1.0, 0.0), (0.0, 1.0), (2.0, 5.0)):
                assert mh.lsh_params(th, n, w) == _lsh_params_by_pow(th, n, w), (th, w, n)


def test_band_keys_collide_exactly_on_equal_bands():
    rng = np.random.default_rng(4)
    sig = rng.integers(0, 2**32, (6, 12), dtype=np.uint64).astype(np.uint32)
    sig[1, :4] = sig[0, :4]  # band 0 shared
    sig[2, 8:] = sig[0, 8:]  # band 2 shared
    sig[3] = sig[0][[4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11]]  # same rows in other bands: no collision
    keys = mh.band_keys(sig, 3, 4)
    assert keys[1, 0] == keys[0, 0] and keys[1, 1] != keys[0, 1]
    assert keys[2, 2] == keys[0, 2]
    assert keys[3, 0] != keys[0, 1] and keys[3, 1] != keys[0, 0]
    assert len(set(keys[4:].ravel().tolist())) == 6
    with pytest.raises(ValueError):
        mh.band_keys(sig, 4, 4)


def test_bucket_pairs_window_and_groups():
    keys = np.array([5, 5, 5, 5, 9, 9, 7], np.uint64)
    refs = np.array([40, 10, 30, 20, 2, 1, 3], np.uint64)
    a, b = mh.bucket_pairs(keys, refs, window=8)
    assert list(zip(a.tolist(), b.tolist())) == [(1, 2), (10, 20), (10, 30), (10, 40), (20, 30), (20, 40), (30, 40)]
    a, b = mh.bucket_pairs(keys, refs, window=1)
    assert list(zip(a.tolist(), b.tolist())) == [(1, 2), (10, 20), (20, 30), (30, 40)]
    groups = np.array([1, 2, 1, 3, 4, 5, 6], np.uint64)  # 40 and 30 are exact twins: only 30 takes part
    a, b = mh.bucket_pairs(keys, refs, window=8, groups=groups)
    assert list(zip(a.tolist(), b.tolist())) == [(1, 2), (10, 20), (10, 30), (20, 30)]


def test_exact_edges_and_unique_pairs():
    hi = np.array([1, 2, 1, 1, 2, 3], np.uint64)
    lo = np.array([5, 6, 5, 5, 7, 8], np.uint64)
    refs = np.array([30, 11, 10, 20, 12, 13], np.uint64)
    a, b = mh.exact_edges(hi, lo, refs)
    assert sorted(zip(a.tolist(), b.tolist())) == [(10, 20), (10, 30)]
    a, b = mh.unique_pairs(np.array([3, 1, 3, 2], np.uint64), np.array([1, 3, 1, 2], np.uint64))
    assert list(zip(a.tolist(), b.tolist())) == [(1, 3)]
    v, c = mh.sorted_unique(np.array([3, 1, 3, 2], np.uint64), return_counts=True)
    assert v.tolist() == [1, 2, 3] and c.tolist() == [1, 1, 2]
