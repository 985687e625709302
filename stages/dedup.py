"""dedup: exact and MinHash-LSH near-duplicate removal, global across all shards.

The stage runs in phases of the phase engine (``ctx.phases``), each a map over tasks through
the executor (Ray or local) except the connected components, a step on the driver:

1. ``signature`` (one task per input shard): normalised-text hash and MinHash signature of
   every document. The LSH band keys and the exact hashes go into one file per shard, split
   into ``P`` row groups by key hash (the shuffle: partition ``p`` reads row group ``p`` of
   every shard); the shard's shingle sets (sorted 64-bit hashes) go into a flat per-shard
   uint64 file (8 bytes per distinct shingle), indexed by a per-shard Parquet file of ids,
   scores, exact hashes and each document's start and count in it, for verification (kept
   under ``_work/`` until the stage ends).
2. ``bucket`` (one task per partition): equal band keys become candidate pairs, equal exact
   hashes exact-duplicate edges; candidate pairs are re-partitioned by pair hash, so each
   pair is verified once.
3. ``verify`` (one task per pair partition): exact Jaccard of each candidate pair on the
   shingle sets, read from the set files of the shards involved (only the rows needed);
   pairs at or above ``threshold`` become edges.
4. ``components`` (driver): connected components of the edge list (verified pairs plus
   exact-duplicate edges) and the keep rule. The driver holds the edges and the ids/scores of
   the documents on them, never the corpus; every other phase holds one shard or one
   partition.
5. ``filter`` (one task per input shard): writes ``part-XXXXX.parquet`` (kept) and
   ``rejected/part-XXXXX.parquet`` (reason ``dedup.exact_duplicate`` or
   ``dedup.minhash_duplicate``, ``detail`` = id of the kept twin) with the input's numbering.

Keep rule: in each cluster the document with the best ``score_column`` (highest, or lowest
with ``higher_score_is_better: false``; when the shards have that column; missing/NaN scores
rank last), then the lowest ``id``. Clusters are connected components, so a document can be
removed as a duplicate of a kept twin it reaches only through another member (the manifest's
``cluster_size_histogram`` shows how large clusters get). Every phase writes its files
atomically and lists them in its result; the engine's markers let a rerun skip finished tasks
whose files still match. ``_work/`` is removed at the end unless ``keep_work``.

Memory: a ``signature`` or ``filter`` task holds one input shard (its text, and its shingle
sets at 8 bytes per shingle); a ``bucket`` task one partition of band rows; a ``verify`` task
the shingle sets of the documents on its pairs; the driver the edge list. ``partitions``
defaults to enough for about ``partition_mb`` per partition.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import field_validator, model_validator

from curate.config import StageConfig
from curate.errors import ConservationError, ShardError
from curate.reasons import declare
from curate.schema import make_rejected
from curate.shardio import atomic_write_bytes, read_parquet
from curate.shards import sum_shards, write_shard
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters import minhash as mh

EXACT = "dedup.exact_duplicate"
NEAR = "dedup.minhash_duplicate"
declare("dedup", {
    "exact_duplicate": "same normalised text as the kept document named in detail",
    "minhash_duplicate": "near-duplicate (exact Jaccard of shingle sets >= threshold, connected through verified "
    "pairs) of the kept document named in detail",
})
_ROW_MASK = np.uint64(0xFFFFFFFF)
_PAIR_MIX = np.uint64(0x9E3779B97F4A7C15)
_BAND_ROW_BYTES = 40  # one band (or exact) row in a partition: part, kind, key, key2, ref
_JACCARD_BINS = [0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.01]


class DedupConfig(StageConfig):
    """Config of the dedup stage.

    Attributes:
        exact: remove exact duplicates (equal hash of the normalised text).
        normalization: steps applied before the exact hash (see ``filters.minhash.normalize_text``).
        minhash: remove near duplicates (MinHash LSH candidates verified by exact Jaccard).
        shingle: ``word``, ``char`` or ``auto`` (character n-grams for Han/Kana text).
        word_ngram / char_ngram: shingle sizes.
        lowercase: lowercase before shingling.
        cjk_ratio: share of Han/Kana characters from which ``auto`` uses character n-grams.
        num_perm / seed: MinHash permutations (datasketch's affine32 family and seed).
        threshold: exact Jaccard (on the shingle sets) from which two documents are duplicates.
        lsh_threshold / lsh_weights: bands x rows are chosen as datasketch does (minimising
            weighted false-positive + false-negative probability) for this threshold and these
            (fp, fn) weights. It sits below ``threshold`` with weight on misses because every
            candidate is verified: the LSH only has to find the pairs, not to decide them.
        bands / rows: explicit LSH shape (both or neither), overriding the choice above.
        bucket_window: each member of an LSH bucket is paired with the next this many members
            (all pairs when the bucket is no larger than window + 1).
        partitions: number of band-key partitions of the shuffle (and of pair partitions);
            None: enough that one holds about ``partition_mb`` of band rows and shingle sets,
            at least one per worker. The kept set does not depend on it.
        partition_mb: target size of one partition when ``partitions`` is None.
        score_column: keep the best value of this column in each cluster when the shards have
            it (e.g. ``ppl`` from the perplexity stage, with ``higher_score_is_better: false``;
            None: ignore scores); ties and missing scores fall back to the lowest id.
        higher_score_is_better: False for columns where lower is better (``ppl``).
        batch_chars: characters of text hashed per batch (bounds worker memory).
        keep_work: keep ``_work/`` (intermediate files) after the stage finishes.
    """

    exact: bool = True
    normalization: tuple[str, ...] = ("lower", "whitespace")
    minhash: bool = True
    shingle: Literal["word", "char", "auto"] = "auto"
    word_ngram: int = 5
    char_ngram: int = 5
    lowercase: bool = True
    cjk_ratio: float = 0.3
    num_perm: int = 128
    seed: int = 1
    threshold: float = 0.8
    lsh_threshold: float = 0.7
    lsh_weights: tuple[float, float] = (0.1, 0.9)
    bands: int | None = None
    rows: int | None = None
    bucket_window: int = 64
    partitions: int | None = None
    partition_mb: int = 256
    score_column: str | None = None
    higher_score_is_better: bool = True
    batch_chars: int = 2_000_000
    keep_work: bool = False

    @field_validator("normalization")
    @classmethod
    def _norm(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if s not in mh.NORMALIZATIONS]
        if bad:
            raise ValueError(f"unknown normalization step(s) {bad}; choose from {list(mh.NORMALIZATIONS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> DedupConfig:
        if not (self.exact or self.minhash):
            raise ValueError("at least one of exact / minhash must be enabled")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if not 0.0 < self.lsh_threshold < 1.0:
            raise ValueError("lsh_threshold must be in (0, 1)")
        if min(self.lsh_weights) < 0 or sum(self.lsh_weights) <= 0:
            raise ValueError("lsh_weights must be non-negative and not both 0")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise ValueError(f"bands x rows must be >= 1 and <= num_perm ({self.num_perm})")
        for name in ("word_ngram", "char_ngram", "num_perm", "bucket_window", "partitions", "batch_chars",
                     "partition_mb"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 < self.cjk_ratio <= 1.0:
            raise ValueError("cjk_ratio must be in (0, 1]")
        return self


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs (picklable): config, LSH shape, paths."""

    config: dict
    bands: int
    rows: int
    partitions: int
    inputs: tuple[str, ...]
    work: str
    out: str
    stage: str

    @property
    def cfg(self) -> DedupConfig:
        return DedupConfig.model_validate(self.config)


def _ref(shard: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(shard) << np.uint64(32)) | np.asarray(rows, np.uint64)


def _shard_of(refs: np.ndarray) -> np.ndarray:
    return (np.asarray(refs, np.uint64) >> np.uint64(32)).astype(np.int64)


def _row_of(refs: np.ndarray) -> np.ndarray:
    return (np.asarray(refs, np.uint64) & _ROW_MASK).astype(np.int64)


def _u64(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, np.uint64), pa.uint64())


def _np(col: pa.ChunkedArray | pa.Array, dtype=np.uint64) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)


def _batches(lengths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed lengths stay near ``budget``."""
    out, start, n = [], 0, lengths.shape[0]
    cum = np.cumsum(lengths)
    while start < n:
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + budget, side="right")))
        out.append((start, min(stop, n)))
        start = stop
    return out


def _text_lengths(col: pa.ChunkedArray) -> np.ndarray:
    lens = pc.fill_null(pc.binary_length(col), 0)
    return _np(lens, np.int64)


def _score_of(table: pa.Table, column: str | None) -> np.ndarray:
    if column is None or column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return _np(pc.cast(table.column(column), pa.float64()), np.float64)


# Work files are read by row group, chosen from the footer's statistics, and the rows kept with
# numpy: the same rows, in file order, as ``pq.read_table(filters=...)``, without the dataset
# machinery (its set-up per call and its imports cost more than the reads themselves).


def _groups_meeting(pf: pq.ParquetFile, column: str, lo: int, hi: int) -> list[int]:
    """Row groups whose ``column`` statistics meet ``[lo, hi]`` (every group without them)."""
    md = pf.metadata
    j = pf.schema_arrow.get_field_index(column)
    out = []
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(j).statistics
        if md.row_group(g).num_rows and (st is None or not st.has_min_max or (st.max >= lo and st.min <= hi)):
            out.append(g)
    return out


def _read_where(path: Path, column: str, lo: int, hi: int, columns: list[str] | None) -> pa.Table:
    """Rows with ``lo <= column <= hi``, in file order."""
    pf = pq.ParquetFile(path)
    names = columns if columns is not None else pf.schema_arrow.names
    groups = _groups_meeting(pf, column, lo, hi)
    if not groups:
        return pf.schema_arrow.empty_table().select(names)
    t = pf.read_row_groups(groups, columns=list(dict.fromkeys([*names, column])))
    v = _np(t.column(column))
    keep = (v >= np.uint64(lo)) & (v <= np.uint64(hi))
    if not keep.all():
        t = t.filter(pa.array(keep))
    return t.select(names)


def _read_filtered(path: Path, lo: int, hi: int, columns: list[str] | None = None) -> pa.Table:
    """Rows of a ref-sorted work file with ``lo <= ref < hi`` (row groups pruned by statistics)."""
    return _read_where(path, "ref", lo, hi - 1, columns)


def _read_refs(path: Path, want: np.ndarray, columns: list[str]) -> pa.Table:
    """The rows of a shard's set index whose ``ref`` is in ``want`` (sorted), in file order.
    Row ``r`` of shard ``s`` has ref ``s << 32 | r``, so the rows are found without a search;
    the caller checks the refs read against ``want``."""
    pf = pq.ParquetFile(path)
    md = pf.metadata
    rows = _row_of(want)
    if rows.size and rows[-1] >= md.num_rows:
        rows = rows[rows < md.num_rows]  # missing documents: the caller's check reports them
    bounds = np.zeros(md.num_row_groups + 1, np.int64)
    np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)], out=bounds[1:])
    g_of = np.searchsorted(bounds, rows, side="right") - 1
    groups = mh.sorted_unique(g_of).tolist()
    names = list(dict.fromkeys(["ref", *columns]))
    if not groups:
        return pf.schema_arrow.empty_table().select(names)
    t = pf.read_row_groups(groups, columns=names)
    first = bounds[groups]
    base = np.zeros(len(groups), np.int64)
    np.cumsum(np.diff(bounds)[groups][:-1], out=base[1:])
    local = rows - first[np.searchsorted(groups, g_of)] + base[np.searchsorted(groups, g_of)]
    return t.take(pa.array(local, pa.int64()))


def _write_work(
    path: Path, table: pa.Table, groups: np.ndarray | None = None, n_groups: int = 0, row_group_size: int = 1 << 20
) -> dict:
    """Write a work file atomically, uncompressed (it holds hashes, which do not compress).

    With ``groups`` (the table's ``part`` column) the rows are sorted by group and each group
    is its own row group, so a reader filtering on ``part`` reads only its group.
    """
    sink = pa.BufferOutputStream()
    stats = [c for c in ("part", "ref") if c in table.column_names]
    with pq.ParquetWriter(sink, table.schema, compression="none", use_dictionary=False, write_statistics=stats) as w:
        if groups is None or table.num_rows == 0:
            w.write_table(table, row_group_size=row_group_size)
        else:
            order = np.argsort(groups, kind="stable")
            table = table.take(pa.array(order))
            bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
            for g in range(n_groups):
                if bounds[g + 1] > bounds[g]:
                    w.write_table(table.slice(bounds[g], bounds[g + 1] - bounds[g]), row_group_size=1 << 30)
    return atomic_write_bytes(path, memoryview(sink.getvalue()))


def _read_sets(path: Path, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The set values ``[start, start + count)`` of each document, concatenated, from a flat
    uint64 file (memory-mapped: only the pages of these documents are read)."""
    total = int(count.sum())
    need = int((start + count).max()) if start.size else 0
    size = path.stat().st_size // 8
    if need > size:
        raise ShardError(f"dedup: work file {path.parent.name}/{path.name} is truncated (rerun with --force)")
    if total == 0:
        return np.empty(0, np.uint64)
    mm = np.memmap(path, dtype="<u8", mode="r", shape=(size,))
    try:
        return np.asarray(mm[np.repeat(start, count) + mh.ranks_within(count)], np.uint64)
    finally:
        del mm


def _read_group(path: Path, g: int, columns: list[str] | None = None) -> pa.Table:
    return _read_where(path, "part", g, g, columns)


# --------------------------------------------------------------------------- workers


class _Worker:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.cfg = plan.cfg
        self.work = Path(plan.work)
        self.shingler = mh.Shingler(
            self.cfg.shingle, self.cfg.word_ngram, self.cfg.char_ngram, self.cfg.lowercase, self.cfg.cjk_ratio
        )


class SignatureWorker(_Worker):
    """Phase 1: hashes, signatures and shingle sets of one input shard."""

    def __init__(self, plan: Plan):
        super().__init__(plan)
        self.minhasher = mh.MinHasher(self.cfg.num_perm, self.cfg.seed) if self.cfg.minhash else None

    def __call__(self, task: dict) -> dict:
        t0 = time.perf_counter()
        s, plan, cfg = task["shard"], self.plan, self.cfg
        path = plan.inputs[s]
        cols = ["id", "text"]
        if cfg.score_column and cfg.score_column in pq.read_schema(path).names:
            cols.append(cfg.score_column)
        table = read_parquet(path, columns=cols)
        col = table.column("text")
        n = table.num_rows
        eh = np.zeros((n, 2), np.uint64)
        keys, krefs, kgroups, set_values, set_counts = [], [], [], [], []
        for a, b in _batches(_text_lengths(col), cfg.batch_chars):
            texts = col.slice(a, b - a).to_pylist()
            refs = _ref(s, np.arange(a, b))
            sb = self.shingler(texts) if self.minhasher is not None else None
            eh[a:b] = self.shingler.exact_hashes(texts, cfg.normalization, sb)
            if sb is None:
                set_counts.append(np.zeros(b - a, np.int64))
                continue
            sig = self.minhasher.signatures(sb.values, sb.offsets)
            ok = sb.counts > 0
            keys.append(mh.band_keys(sig[ok], plan.bands, plan.rows).ravel())
            krefs.append(np.repeat(refs[ok], plan.bands))
            # Exact duplicates are linked by their own edges: in a bucket one of them suffices.
            kgroups.append(np.repeat(eh[a:b][ok, 0] if cfg.exact else refs[ok], plan.bands))
            v, off = mh.sort_sets(sb.values, sb.offsets)
            set_values.append(v)
            set_counts.append(np.diff(off))
        cat = lambda xs, dt=np.uint64: np.concatenate(xs) if xs else np.empty(0, dt)  # noqa: E731
        keys, krefs, kgroups = cat(keys), cat(krefs), cat(kgroups)
        refs = _ref(s, np.arange(n))
        xhi, xlo, xrefs = (eh[:, 0], eh[:, 1], refs) if cfg.exact else (cat([]), cat([]), cat([]))
        P = np.uint64(plan.partitions)
        part = np.concatenate([keys % P, xlo % P]).astype(np.uint32)
        bands = pa.table(
            {
                "part": pa.array(part, pa.uint32()),
                "kind": pa.array(np.concatenate([np.zeros(keys.shape[0], np.uint8), np.ones(xlo.shape[0], np.uint8)])),
                "key": _u64(np.concatenate([keys, xhi])),
                "key2": _u64(np.concatenate([kgroups, xlo])),
                "ref": _u64(np.concatenate([krefs, xrefs])),
            }
        )
        files = [_write_work(self.work / "bands" / f"s{s:05d}.parquet", bands, part, plan.partitions)]
        counts = cat(set_counts, np.int64)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        # The set values go into a flat little-endian uint64 file (a nested Parquet list column
        # cost more to encode than all the hashing); the Parquet file indexes it per document.
        values = cat(set_values).astype("<u8", copy=False)
        files.append(atomic_write_bytes(self.work / "sets" / f"s{s:05d}.u64", memoryview(values).cast("B")))
        sets = pa.table(
            {
                "ref": _u64(refs),
                "id": table.column("id"),
                "score": pa.array(_score_of(table, cfg.score_column), pa.float64()),
                "hi": _u64(eh[:, 0]),
                "lo": _u64(eh[:, 1]),
                "start": pa.array(offsets[:-1], pa.int64()),
                "count": pa.array(counts, pa.int64()),
            }
        )
        files.append(_write_work(self.work / "sets" / f"s{s:05d}.parquet", sets, row_group_size=1024))
        marker = {
            "shard": s,
            "rows": n,
            "no_shingles": int((counts == 0).sum()) if cfg.minhash else 0,
            "band_rows": int(keys.shape[0]),
            "shingles": int(offsets[-1]),
            "seconds": round(time.perf_counter() - t0, 3),
            "files": files,
        }
        return marker


class BucketWorker(_Worker):
    """Phase 2: one band-key partition -> candidate pairs (by pair partition), exact edges."""

    def __call__(self, task: dict) -> dict:
        t0 = time.perf_counter()
        p, plan = task["partition"], self.plan
        parts = [_read_group(self.work / "bands" / f"s{s:05d}.parquet", p, ["kind", "key", "key2", "ref"])
                 for s in range(len(plan.inputs))]
        t = pa.concat_tables(parts)
        kind, key, key2, ref = (_np(t.column(c), np.uint8 if c == "kind" else np.uint64)
                                for c in ("kind", "key", "key2", "ref"))
        del t, parts
        band = kind == 0
        pa_, pb = mh.bucket_pairs(key[band], ref[band], self.cfg.bucket_window, groups=key2[band])
        xa, xb = mh.exact_edges(key[~band], key2[~band], ref[~band])
        bucket_sizes = mh.sorted_unique(key[band], return_counts=True)[1]
        Q = plan.partitions
        q = (mh.fmix64(pa_ ^ (pb * _PAIR_MIX)) % np.uint64(Q)).astype(np.uint32)
        files = [
            _write_work(
                self.work / "pairs" / f"p{p:04d}.parquet",
                pa.table({"part": pa.array(q, pa.uint32()), "a": _u64(pa_), "b": _u64(pb)}),
                q,
                Q,
            ),
            _write_work(self.work / "xedges" / f"p{p:04d}.parquet", pa.table({"a": _u64(xa), "b": _u64(xb)})),
        ]
        marker = {
            "partition": p,
            "band_rows": int(band.sum()),
            "exact_rows": int((~band).sum()),
            "buckets_shared": int((bucket_sizes > 1).sum()),
            "largest_bucket": int(bucket_sizes.max()) if bucket_sizes.size else 0,
            "candidate_pairs": int(pa_.shape[0]),
            "exact_edges": int(xa.shape[0]),
            "seconds": round(time.perf_counter() - t0, 3),
            "files": files,
        }
        return marker


class VerifyWorker(_Worker):
    """Phase 3: exact Jaccard of one pair partition's candidates on their shingle sets."""

    def __call__(self, task: dict) -> dict:
        t0 = time.perf_counter()
        q, plan, cfg = task["partition"], self.plan, self.cfg
        parts = [_read_group(self.work / "pairs" / f"p{p:04d}.parquet", q, ["a", "b"]) for p in range(plan.partitions)]
        t = pa.concat_tables(parts)
        a, b = mh.unique_pairs(_np(t.column("a")), _np(t.column("b")))
        del t, parts
        nodes = mh.sorted_unique(np.concatenate([a, b]))
        values, counts = [], []
        shards = _shard_of(nodes)
        for s in mh.sorted_unique(shards):
            want = nodes[shards == s]
            st = _read_refs(self.work / "sets" / f"s{s:05d}.parquet", want, ["ref", "start", "count"])
            got = _np(st.column("ref"))
            if not np.array_equal(got, want):
                raise ShardError(
                    f"dedup: work file sets/s{s:05d}.parquet misses {np.setdiff1d(want, got).size} documents "
                    "(rerun with --force)"
                )
            values.append(_read_sets(self.work / "sets" / f"s{s:05d}.u64", _np(st.column("start"), np.int64),
                                     cnt := _np(st.column("count"), np.int64)))
            counts.append(cnt)
        counts = np.concatenate(counts) if counts else np.empty(0, np.int64)
        offsets = np.zeros(counts.shape[0] + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        values = np.concatenate(values) if values else np.empty(0, np.uint64)
        jac = mh.jaccard_pairs(values, offsets, np.searchsorted(nodes, a), np.searchsorted(nodes, b))
        keep = jac >= cfg.threshold - 1e-12
        edges = _write_work(
            self.work / "edges" / f"q{q:04d}.parquet",
            pa.table({"a": _u64(a[keep]), "b": _u64(b[keep]), "jaccard": pa.array(jac[keep], pa.float32())}),
        )
        hist = np.histogram(jac, bins=_JACCARD_BINS)[0]
        marker = {
            "partition": q,
            "candidate_pairs": int(a.shape[0]),
            "verified_pairs": int(keep.sum()),
            "candidate_jaccard_histogram": {
                f"[{lo:g},{min(hi, 1.0):g}{']' if hi > 1 else ')'}": int(c)
                for lo, hi, c in zip(_JACCARD_BINS[:-1], _JACCARD_BINS[1:], hist)
            },
            "seconds": round(time.perf_counter() - t0, 3),
            "files": [edges],
        }
        return marker


class FilterWorker(_Worker):
    """Phase 5: split one input shard into kept and rejected rows by the decisions."""

    def __call__(self, task: dict) -> dict:
        t0 = time.perf_counter()
        s, plan = task["shard"], self.plan
        out = Path(plan.out)
        table = read_parquet(plan.inputs[s])
        n = table.num_rows
        dec = _read_filtered(self.work / "decisions.parquet", s << 32, (s + 1) << 32)
        rows = _row_of(_np(dec.column("ref")))
        mask = np.ones(n, bool)
        mask[rows] = False
        kept = table.filter(pa.array(mask))
        rejected = make_rejected(
            table.take(pa.array(rows, pa.int64())),
            "dedup",
            dec.column("reason").to_pylist(),
            dec.column("keeper_id").to_pylist(),
        )
        marker = write_shard(out, s, kept, rejected, n, where=f"stage {plan.stage} shard {s}",
                             input_info={"path": plan.inputs[s]})
        marker["seconds"] = round(time.perf_counter() - t0, 3)
        return marker


# --------------------------------------------------------------------------- driver-side logic


def connected_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an undirected edge list by a vectorised union-find.

    Each round hooks, for every edge whose endpoints have different roots, the larger root
    under the smaller one (``np.minimum.at``: roots only ever point to smaller indices, so no
    cycle can form), then compresses paths by pointer jumping until every node points to its
    root. Rounds repeat until no edge joins two roots.

    Returns:
        (sorted unique nodes, component label of each node: the index of its root node).
    """
    nodes = mh.sorted_unique(np.concatenate([np.asarray(a, np.uint64), np.asarray(b, np.uint64)]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    parent = np.arange(nodes.shape[0], dtype=np.int64)
    while True:
        ra, rb = parent[ia], parent[ib]
        join = ra != rb
        if not join.any():
            return nodes, parent
        np.minimum.at(parent, np.maximum(ra, rb)[join], np.minimum(ra, rb)[join])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def choose_keepers(labels: np.ndarray, scores: np.ndarray, ids: pa.Array) -> np.ndarray:
    """Index of the kept node of each node's cluster: highest score (NaN last), then lowest id."""
    score = pa.array(scores, pa.float64(), mask=np.isnan(scores))
    order = pc.sort_indices(
        pa.table({"label": labels, "score": score, "id": ids}),
        sort_keys=[("label", "ascending", "at_end"), ("score", "descending", "at_end"), ("id", "ascending", "at_end")],
    ).to_numpy()
    lab = labels[order]
    first = np.ones(order.shape[0], bool)
    first[1:] = lab[1:] != lab[:-1]
    keeper_of_label = np.empty(int(labels.max()) + 1 if labels.size else 0, np.int64)
    keeper_of_label[lab[first]] = order[first]
    return keeper_of_label[labels]


def resolve(work: Path, partitions: int, exact: bool, higher_is_better: bool = True) -> dict:
    """Phase 4 on the driver: components of the edge list, keepers, and the decisions file."""
    ea, eb = [], []
    for q in range(partitions):
        t = read_parquet(work / "edges" / f"q{q:04d}.parquet", columns=["a", "b"])
        ea.append(_np(t.column("a")))
        eb.append(_np(t.column("b")))
    n_verified = sum(x.shape[0] for x in ea)
    for p in range(partitions):
        t = read_parquet(work / "xedges" / f"p{p:04d}.parquet")
        ea.append(_np(t.column("a")))
        eb.append(_np(t.column("b")))
    a, b = np.concatenate(ea), np.concatenate(eb)
    nodes, labels = connected_components(a, b)
    metas = []
    shards = _shard_of(nodes)
    for s in mh.sorted_unique(shards):
        want = nodes[shards == s]
        t = _read_refs(work / "sets" / f"s{s:05d}.parquet", want, ["ref", "id", "score", "hi", "lo"])
        if not np.array_equal(_np(t.column("ref")), want):
            raise ShardError(f"dedup: work file sets/s{s:05d}.parquet misses documents on edges (rerun with --force)")
        metas.append(t)
    meta = pa.concat_tables(metas) if metas else pa.table(
        {"ref": pa.array([], pa.uint64()), "id": pa.array([], pa.string()), "score": pa.array([], pa.float64()),
         "hi": pa.array([], pa.uint64()), "lo": pa.array([], pa.uint64())}
    )
    ids = meta.column("id").combine_chunks()
    score = _np(meta.column("score"), np.float64)
    keeper = choose_keepers(labels, score if higher_is_better else -score, ids)
    hi, lo = _np(meta.column("hi")), _np(meta.column("lo"))
    removed = np.flatnonzero(keeper != np.arange(nodes.shape[0]))
    k = keeper[removed]
    same = (hi[removed] == hi[k]) & (lo[removed] == lo[k])
    reasons = np.where(same & exact, EXACT, NEAR)
    dec = pa.table(
        {
            "ref": _u64(nodes[removed]),
            "keeper": _u64(nodes[k]),
            "keeper_id": ids.take(pa.array(k, pa.int64())),
            "reason": pa.array(reasons.tolist(), pa.string()),
        }
    )
    dec_info = _write_work(work / "decisions.parquet", dec, row_group_size=65536)
    sizes = np.bincount(labels) if labels.size else np.empty(0, np.int64)
    sizes = sizes[sizes > 0]
    hist = Counter(sizes.tolist())
    summary = {
        "edges_verified": int(n_verified),
        "edges_exact": int(a.shape[0] - n_verified),
        "clusters": int(sizes.shape[0]),
        "documents_in_clusters": int(nodes.shape[0]),
        "largest_cluster": int(sizes.max()) if sizes.size else 0,
        "cluster_size_histogram": {str(k): v for k, v in sorted(hist.items())},
        "removed": int(removed.shape[0]),
        "files": [dec_info],
    }
    return summary


# --------------------------------------------------------------------------- the stage


class DedupStage(GlobalStage):
    name = "dedup"
    version = "1"
    Config = DedupConfig

    def lsh_shape(self) -> tuple[int, int]:
        cfg = self.config
        if cfg.bands is not None:
            return cfg.bands, cfg.rows
        return mh.lsh_params(cfg.lsh_threshold, cfg.num_perm, cfg.lsh_weights)

    def partitions(self, inputs: tuple[str, ...], bands: int, workers: int) -> int:
        """The configured partition count, or enough that one partition holds about
        ``partition_mb`` of band rows and shingle sets (estimated from the Parquet footers:
        row counts, and the uncompressed text size as a bound on 8 bytes per shingle)."""
        if self.config.partitions is not None:
            return self.config.partitions
        total = 0
        for p in inputs:
            meta = pq.read_metadata(p)
            total += meta.num_rows * (bands + 1) * _BAND_ROW_BYTES
            names = [meta.schema.column(j).name for j in range(meta.num_columns)]
            if "text" in names:
                j = names.index("text")
                total += sum(meta.row_group(g).column(j).total_uncompressed_size for g in range(meta.num_row_groups))
        return max(1, workers, -(-total // (self.config.partition_mb << 20)))

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: DedupConfig = self.config
        bands, rows = self.lsh_shape() if cfg.minhash else (0, 0)
        inputs = tuple(str(Path(p).resolve()) for p in ctx.input_shards)
        S, P = len(inputs), self.partitions(inputs, bands, ctx.workers)
        if S == 0:
            return GlobalResult(extra={"clusters": {"clusters": 0, "documents_in_clusters": 0, "largest_cluster": 0,
                                                    "cluster_size_histogram": {}}})
        work = ctx.work_dir
        work.mkdir(parents=True, exist_ok=True)
        plan = Plan(
            cfg.model_dump(mode="json"), bands, rows, P, inputs, str(work.resolve()), str(ctx.out_dir.resolve()),
            ctx.stage_name,
        )
        shards = [{"shard": s} for s in range(S)]
        parts = [{"partition": p} for p in range(P)]
        # work_format 2: shingle sets in flat .u64 files
        shape = {"work_format": 2, "bands": bands, "rows": rows, "partitions": P}
        ph = ctx.phases
        sig = ph.map("signature", SignatureWorker, (plan,), shards, key=shape, desc=f"{ctx.stage_name}: signatures")
        buck = ph.map("bucket", BucketWorker, (plan,), parts, desc=f"{ctx.stage_name}: buckets")
        ver = ph.map("verify", VerifyWorker, (plan,), parts, desc=f"{ctx.stage_name}: verify")
        summary = ph.step("components", lambda: resolve(work, P, cfg.exact, cfg.higher_score_is_better))
        filt = ph.map("filter", FilterWorker, (plan,), shards, desc=f"{ctx.stage_name}: filter")

        totals = sum_shards(filt, f"stage {ctx.stage_name}")
        if totals["rejected_rows"] != summary["removed"]:
            raise ConservationError(
                f"stage {ctx.stage_name}: {summary['removed']} dedup decisions but {totals['rejected_rows']} rejected rows"
            )
        hist: Counter = Counter()
        for m in ver:
            hist.update(m["candidate_jaccard_histogram"])
        extra: dict[str, Any] = {
            "clusters": {k: summary[k] for k in ("clusters", "documents_in_clusters", "largest_cluster",
                                                 "cluster_size_histogram")},
            "lsh": {
                "partitions": P,
                "num_perm": cfg.num_perm,
                "bands": bands,
                "rows": rows,
                "lsh_threshold": cfg.lsh_threshold,
                "lsh_weights": list(cfg.lsh_weights),
                "verify_threshold": cfg.threshold,
                "p_candidate_at_threshold": round(float(mh.candidate_probability(cfg.threshold, bands, rows)), 6)
                if bands else None,
            },
            "candidates": {
                "band_rows": sum(m["band_rows"] for m in sig),
                "docs_without_shingles": sum(m["no_shingles"] for m in sig),
                "largest_bucket": max((m["largest_bucket"] for m in buck), default=0),
                "pairs_emitted": sum(m["candidate_pairs"] for m in buck),
                "pairs_unique": sum(m["candidate_pairs"] for m in ver),
                "pairs_verified": sum(m["verified_pairs"] for m in ver),
                "exact_edges": summary["edges_exact"],
                "candidate_jaccard_histogram": dict(hist),
            },
            "driver": {
                "note": "union-find runs on the driver over the edge list and the ids/scores of the "
                "documents on edges, not over the corpus",
                "edges": summary["edges_verified"] + summary["edges_exact"],
                "nodes": summary["documents_in_clusters"],
            },
        }
        return GlobalResult.from_shards(totals, extra=extra)


STAGE = DedupStage
