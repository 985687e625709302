"""Token shards by ``np.memmap``: pretraining mixtures and SFT mixtures (the token-shard contract).

A mixture directory holds ``meta.json`` and flat token arrays; this module reads nothing else
of the pipeline. Batches are a pure function of ``(seed, batch index)``: the training stream is
cut into rows (pretraining: windows of ``block_size + 1`` tokens at stride ``block_size``; SFT:
whole packed examples greedily grouped into rows), every epoch visits the rows in a seeded
permutation, and batch ``b`` takes the next ``batch_size`` rows. Resuming therefore needs only
the next batch index.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIX_FORMAT = "curate-mixture/1"
SFT_FORMAT = "curate-sft/1"


class DataError(Exception):
    """A mixture directory that does not follow the token-shard contract (one line)."""


@dataclass
class Batch:
    """Inputs ``x`` and targets ``y`` (int64, ``(B, T)``) with optional per-target weights ``w``
    (0/1: padding and masked tokens are 0), segment ids and position ids (SFT packing)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray | None = None
    seg: np.ndarray | None = None
    pos: np.ndarray | None = None


def read_meta(d: str | Path) -> dict:
    """``meta.json`` of a mixture directory; DataError when absent or of an unknown format."""
    p = Path(d) / "meta.json"
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read mixture metadata ({e})") from None
    if meta.get("format") not in (MIX_FORMAT, SFT_FORMAT):
        raise DataError(f"{p}: unknown format {meta.get('format')!r} (expected {MIX_FORMAT} or {SFT_FORMAT})")
    return meta


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def token_bytes(tokenizer_json: str | Path, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for (special tokens: 0), for bits-per-byte.

    A byte-level BPE spells every byte as one character of its vocabulary strings, so a
    token's byte count is its string's length; other tokenizers decode each id alone.
    """
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    out = np.zeros(vocab_size, dtype=np.int64)
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    decoder = (spec.get("decoder") or {}).get("type")
    vocab = (spec.get("model") or {}).get("vocab")
    if decoder == "ByteLevel" and isinstance(vocab, dict):
        for tok, i in vocab.items():
            if i < vocab_size:
                out[i] = len(tok)
        for t in spec.get("added_tokens", []):
            if t["id"] < vocab_size and not t.get("special"):
                out[t["id"]] = len(t["content"].encode("utf-8"))
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        for i in range(vocab_size):
            out[i] = len(tok.decode([i], skip_special_tokens=False).encode("utf-8"))
    for i in special:
        if i < vocab_size:
            out[i] = 0
    return out


class Concat:
    """Several flat token files read as one array (``read`` crosses file boundaries)."""

    def __init__(self, paths: list[Path], dtype: np.dtype):
        self.arrays = [np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.zeros(0, dtype) for p in paths]
        self.starts = np.concatenate(([0], np.cumsum([len(a) for a in self.arrays]))).astype(np.int64)
        self.n = int(self.starts[-1])

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        pos, k = 0, int(np.searchsorted(self.starts, start, side="right") - 1)
        while pos < n:
            a = self.arrays[k]
            lo = start + pos - int(self.starts[k])
            take = min(n - pos, len(a) - lo)
            out[pos : pos + take] = a[lo : lo + take]
            pos += take
            k += 1
        return out


class _Epochs:
    """Row order: epoch ``e`` visits rows in ``default_rng([seed, e]).permutation(n_rows)``."""

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        if n_rows < 1:
            raise DataError("the training data holds no complete row (fewer tokens than block_size + 1)")
        self.n, self.bs, self.seed = n_rows, batch_size, seed
        self._perm: dict[int, np.ndarray] = {}

    def rows(self, b: int) -> np.ndarray:
        g = np.arange(b * self.bs, (b + 1) * self.bs, dtype=np.int64)
        out = np.empty(self.bs, dtype=np.int64)
        for e in np.unique(g // self.n):
            if e not in self._perm:
                self._perm = {int(e): np.random.default_rng([self.seed, int(e)]).permutation(self.n)}
            m = g // self.n == e
            out[m] = self._perm[int(e)][g[m] % self.n]
        return out


class PretrainData:
    """A ``curate-mixture/1`` directory: train windows, per-source validation sets, doc sources.

    Args:
        d: the mixture directory.
        block_size: tokens per input row (windows hold ``block_size + 1``).
        batch_size: rows per batch.
        seed: seeds the epoch permutations.
    """

    kind = "pretrain"

    def __init__(self, d: str | Path, block_size: int, batch_size: int, seed: int = 0):
        self.dir = Path(d)
        self.meta = read_meta(self.dir)
        if self.meta["format"] != MIX_FORMAT:
            raise DataError(f"{self.dir}: expected a pretraining mixture ({MIX_FORMAT})")
        self.dtype = np.dtype(self.meta["dtype"])
        self.T, self.bs, self.seed = block_size, batch_size, seed
        self.train = Concat([self.dir / f["path"] for f in self.meta["train"]["files"]], self.dtype)
        self.n_rows = max(0, (self.train.n - 1) // block_size)
        self.epochs = _Epochs(self.n_rows, batch_size, seed)
        self.sources = list(self.meta.get("train_docs", {}).get("sources") or self.meta["sources"])
        self._docs = None

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / self.meta["tokenizer"]["file"]

    def window_starts(self, b: int) -> np.ndarray:
        return self.epochs.rows(b) * self.T

    def batch(self, b: int) -> Batch:
        rows = [self.train.read(int(s), self.T + 1) for s in self.window_starts(b)]
        arr = np.stack(rows)
        return Batch(arr[:, :-1], arr[:, 1:])

    # --- per-document sources (the mix stage's train-NNNNN.docs.npy sidecar)

    def has_doc_index(self) -> bool:
        return all("docs" in f and (self.dir / f["docs"]).is_file() for f in self.meta["train"]["files"])

    def doc_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global (start, length, source) of every train document, in stream order."""
        if self._docs is None:
            if not self.has_doc_index():
                raise DataError(f"{self.dir}: no per-document sidecar (train-*.docs.npy); rerun the mix stage")
            parts = []
            for k, f in enumerate(self.meta["train"]["files"]):
                d = np.load(self.dir / f["docs"], allow_pickle=False)
                parts.append((d["off"].astype(np.int64) + int(self.train.starts[k]), d["len"].astype(np.int64),
                              d["src"].astype(np.int64)))
            self._docs = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
        return self._docs

    def target_sources(self, starts: np.ndarray) -> np.ndarray:
        """Per window start, target tokens per source: ``(len(starts), n_sources)`` counts."""
        ds, dl, src = self.doc_index()
        de = ds + dl
        out = np.zeros((len(starts), len(self.sources)), dtype=np.int64)
        for r, s in enumerate(starts):
            a, b = int(s) + 1, int(s) + 1 + self.T  # targets are tokens s+1 .. s+T
            i0 = int(np.searchsorted(de, a, side="right"))
            i1 = int(np.searchsorted(ds, b, side="left"))
            for i in range(i0, i1):
                out[r, src[i]] += min(b, de[i]) - max(a, ds[i])
        return out

    def batch_sources(self, b: int) -> dict[str, float]:
        """Share of batch ``b``'s target tokens per source (empty without the sidecar)."""
        if not self.has_doc_index():
            return {}
        c = self.target_sources(self.window_starts(b)).sum(axis=0)
        return {n: round(float(v) / max(int(c.sum()), 1), 4) for n, v in zip(self.sources, c) if v}

    # --- validation

    def val_sets(self) -> dict[str, np.ndarray]:
        """Validation tokens per source (files ``val-<source>-*.bin``)."""
        return read_val_sets(self.dir)

    def val_batches(self, max_tokens: int | None, batch_size: int):
        """Yield ``(source, Batch)``: every validation target once (up to ``max_tokens`` per source)."""
        for s, v in self.val_sets().items():
            if max_tokens:
                v = v[: max_tokens + 1]
            yield from ((s, b) for b in windows(v, self.T, batch_size))


def read_val_sets(d: str | Path, tokenizer_sha256: str | None = None) -> dict[str, np.ndarray]:
    """Validation tokens per source of a mixture directory (its ``val.files``, by ``source``).

    Args:
        tokenizer_sha256: when given, the directory's tokenizer must be this one.
    """
    d = Path(d)
    meta = read_meta(d)
    if tokenizer_sha256 and meta["tokenizer"]["sha256"] != tokenizer_sha256:
        raise DataError(f"{d}: tokenizer {meta['tokenizer']['sha256'][:12]} differs from the run's {tokenizer_sha256[:12]}")
    by: dict[str, list[Path]] = {}
    for f in meta["val"]["files"]:
        by.setdefault(f.get("source", "val"), []).append(d / f["path"])
    out = {}
    for s, paths in by.items():
        c = Concat(paths, np.dtype(meta["dtype"]))
        out[s] = c.read(0, c.n)
    return out


def windows(v: np.ndarray, T: int, batch_size: int):
    """Batches of windows over ``v`` covering each target once; the last window is padded (w=0)."""
    starts = list(range(0, max(len(v) - 1, 0), T))
    for i in range(0, len(starts), batch_size):
        sel = starts[i : i + batch_size]
        x = np.zeros((len(sel), T), dtype=np.int64)
        y = np.zeros((len(sel), T), dtype=np.int64)
        w = np.zeros((len(sel), T), dtype=np.float32)
        for r, s in enumerate(sel):
            n = min(T, len(v) - 1 - s)
            x[r, :n], y[r, :n], w[r, :n] = v[s : s + n], v[s + 1 : s + 1 + n], 1.0
        yield Batch(x, y, w)


class SFTData:
    """A ``curate-sft/1`` directory: packed examples with loss masks and ``.idx`` boundaries.

    Whole examples are grouped in order into rows of at most ``block_size + 1`` tokens (an
    example longer than that is cut to it; ``truncated`` counts them). Inside a row every
    example is its own segment: attention stays within it and positions restart at 0.
    """

    kind = "sft"

    def __init__(self, d: str | Path, block_size: int, batch_size: int, seed: int = 0):
        self.dir = Path(d)
        self.meta = read_meta(self.dir)
        if self.meta["format"] != SFT_FORMAT:
            raise DataError(f"{self.dir}: expected an SFT mixture ({SFT_FORMAT})")
        self.dtype = np.dtype(self.meta["dtype"])
        self.T, self.bs, self.seed = block_size, batch_size, seed
        self.pad = int(self.meta["tokenizer"].get("eos_id", 0))
        self.sources = ["sft"]
        self.train_files = [self._open(f) for f in self.meta["train"]["files"]]
        self.rows, self.truncated = self._rows(self.train_files)
        self.n_rows = len(self.rows)
        self.epochs = _Epochs(self.n_rows, batch_size, seed)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / self.meta["tokenizer"].get("file", "tokenizer.json")

    def _open(self, f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tok = np.memmap(self.dir / f["path"], dtype=self.dtype, mode="r")
        mask = np.memmap(self.dir / f["mask"], dtype=np.uint8, mode="r")
        idx = np.fromfile(self.dir / f["idx"], dtype="<i8")
        if len(mask) != len(tok):
            raise DataError(f"{self.dir / f['mask']}: {len(mask)} mask bytes for {len(tok)} tokens")
        if len(idx) < 1 or idx[0] != 0 or idx[-1] != len(tok) or np.any(np.diff(idx) <= 0):
            raise DataError(f"{self.dir / f['idx']}: offsets must rise from 0 to the token count {len(tok)}")
        return tok, mask, idx

    def _rows(self, files) -> tuple[list[tuple[int, int, int]], int]:
        rows, truncated, cap = [], 0, self.T + 1
        for k, (_, _, idx) in enumerate(files):
            a = 0
            while a < len(idx) - 1:
                b = a + 1
                while b < len(idx) - 1 and idx[b + 1] - idx[a] <= cap:
                    b += 1
                end = min(int(idx[b]), int(idx[a]) + cap)
                truncated += int(idx[b]) - int(idx[a]) > cap
                rows.append((k, int(idx[a]), end))
                a = b
        return rows, truncated

    def _row_batch(self, files, rows) -> Batch:
        n = self.T + 1
        tok = np.full((len(rows), n), self.pad, dtype=np.int64)
        msk = np.zeros((len(rows), n), dtype=np.float32)
        seg = np.full((len(rows), n), -1, dtype=np.int64)
        pos = np.zeros((len(rows), n), dtype=np.int64)
        for r, (k, a, b) in enumerate(rows):
            t, m, idx = files[k]
            L = b - a
            tok[r, :L], msk[r, :L] = t[a:b], m[a:b]
            ex = np.searchsorted(idx, np.arange(a, b), side="right") - 1
            seg[r, :L] = ex
            pos[r, :L] = np.arange(a, b) - idx[ex]
            pos[r, L:] = np.arange(n - L)
        w = msk[:, 1:] * (seg[:, 1:] == seg[:, :-1]) * (seg[:, 1:] >= 0)
        return Batch(tok[:, :-1], tok[:, 1:], w.astype(np.float32), seg[:, :-1], pos[:, :-1])

    def batch(self, b: int) -> Batch:
        return self._row_batch(self.train_files, [self.rows[i] for i in self.epochs.rows(b)])

    def batch_sources(self, b: int) -> dict[str, float]:
        return {"sft": 1.0}

    def val_batches(self, max_tokens: int | None, batch_size: int):
        files = [self._open(f) for f in self.meta.get("val", {}).get("files", [])]
        rows, _ = self._rows(files)
        total, sel = 0, []
        for r in rows:
            if max_tokens and total >= max_tokens:
                break
            sel.append(r)
            total += r[2] - r[1]
        for i in range(0, len(sel), batch_size):
            yield "sft", self._row_batch(files, sel[i : i + batch_size])


def open_data(d: str | Path, block_size: int, batch_size: int, seed: int = 0) -> PretrainData | SFTData:
    """The reader for a mixture directory, chosen by its ``meta.json`` format."""
    meta = read_meta(d)
    cls = SFTData if meta["format"] == SFT_FORMAT else PretrainData
    return cls(d, block_size, batch_size, seed)
