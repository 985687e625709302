"""Mix: domain mixing and tokenisation into packed token shards for pretraining.

A mixture (YAML in ``manifests/mixtures/`` or inline in the stage config) names sources by a
DuckDB SQL predicate over the input shards, gives each a target token weight and an epoch cap,
and sets a total train-token budget and a seed. The stage runs in three phases:

1. **Tokenise** (``ctx.executor.map``, one task per input shard): assign each document to a
   source (first matching predicate in mixture order; with ``overlap: error`` a document
   matching two sources is an error), tokenise the assigned ones and write per-shard token
   arrays plus a per-document index to ``_work/``. Unassigned documents go to
   ``rejected/part-*.parquet`` with reason ``mix.unassigned``.
2. **Plan** (driver, small): per-source totals -> :func:`filters.mixplan.plan`, which checks
   feasibility against ``max_epochs`` and gives each source whole epochs plus a partial epoch.
   The partial epoch takes the source's train documents in the order of a seeded hash of their
   id and truncates the last one so that the token count is exact.
3. **Pack** (driver, streaming): ``P`` passes over the shards (``P`` = the most passes any
   source needs); a document's copies go to distinct passes, shards and documents are visited
   in seeded orders, each document is followed by EOS. Train tokens go to ``train-NNNNN.bin``,
   held-out documents (a stable hash of the id, independent of the seed) to
   ``val-<source>-NNNNN.bin``.

Memory stays flat in the corpus size: workers hold one shard, the driver holds per-source
histograms (4096 bins) and one shard's index at a time.

Outputs in the stage directory: ``train-*.bin``, ``val-<source>-*.bin`` (uint16 when the
vocabulary has fewer than 65536 ids, else uint32), ``meta.json``, ``tokenizer.json``,
``sources.parquet`` (queryable as ``mix_sources`` with ``curate sql``) and ``rejected/``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pydantic import Field, field_validator, model_validator

from curate.config import StageConfig, build_config, config_hash, read_yaml_mapping
from curate.errors import ConfigError
from curate.reasons import declare
from curate.schema import make_rejected, rejected_schema
from curate.shardio import atomic_write_bytes, atomic_write_json, file_info, read_parquet, sha256_file, write_parquet
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters import bpe
from filters.mixplan import MixPlan, SourceSupply, plan

HIST_BITS = 12  # histogram of seeded keys per source: 4096 bins
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
INDEX_DTYPE = np.dtype(
    [("row", "<i8"), ("src", "<i2"), ("val", "u1"), ("off", "<i8"), ("len", "<i8"), ("key", "<u8")]
)
FORMAT = "curate-mixture/1"
REASONS = declare("mix", {
    "unassigned": "the document matches the predicate of no source of the mixture",
})


# ----------------------------------------------------------------------------- config


class SourceSpec(StageConfig):
    """One source of a mixture.

    Attributes:
        where: a DuckDB SQL predicate over the input shard's columns (NULL counts as false).
        weight: target share of train tokens (relative; normalised over all sources).
        max_epochs: upsampling cap: at most this many passes over the source's train tokens.
    """

    where: str
    weight: float = Field(ge=0)
    max_epochs: float = Field(default=1.0, gt=0)


class TokenizerSpec(StageConfig):
    """The base tokenizer: ``path`` to a user's ``tokenizer.json``, another stage's, or train one.

    Attributes:
        path: an existing ``tokenizer.json`` (relative paths resolve against the current
            directory); when neither it nor ``from_stage`` is set a byte-level BPE is trained
            on a sample of the input.
        from_stage: a pipeline stage whose output directory holds the ``tokenizer.json`` to
            use (e.g. the ``vocab`` stage's extended tokenizer); that stage runs first.
        vocab_size: vocabulary size of a trained tokenizer.
        min_frequency: BPE merge threshold of a trained tokenizer.
        sample_bytes: about this many bytes of assigned text are sampled for training.
        eos_token: the end-of-document token (must exist in a loaded tokenizer).
    """

    path: str | None = None
    from_stage: str | None = None
    vocab_size: int = Field(default=8192, ge=260, le=1 << 31)
    min_frequency: int = Field(default=2, ge=1)
    sample_bytes: int = Field(default=20_000_000, gt=0)
    eos_token: str = bpe.DEFAULT_EOS

    @model_validator(mode="after")
    def _one_source(self):
        if self.path and self.from_stage:
            raise ValueError("set at most one of tokenizer.path and tokenizer.from_stage")
        return self

    def file(self, run_dir: Path) -> Path | None:
        """The tokenizer file to load (``path``, or ``from_stage``'s ``tokenizer.json``); None: train one."""
        if self.from_stage:
            return Path(run_dir) / self.from_stage / "tokenizer.json"
        return Path(self.path) if self.path else None


class MixtureSpec(StageConfig):
    """A pretraining mixture.

    Attributes:
        name: the mixture's name (recorded in ``meta.json``).
        seed: seeds the partial-epoch sample, the pass assignment and the packing order.
        budget_tokens: total train tokens (EOS included), or ``max`` for the largest budget the
            target weights reach within every source's ``max_epochs``.
        val_fraction: share of each source's documents held out for validation (by a stable
            hash of the document id; a source with at least two documents keeps at least one).
        overlap: ``error`` (a document matching two sources stops the stage) or ``first``
            (the first matching source in mixture order wins).
        shard_tokens: most tokens per ``.bin`` file.
        tokenizer: see :class:`TokenizerSpec`.
        sources: source name -> :class:`SourceSpec`, in priority order.
    """

    name: str
    seed: int = Field(default=0, ge=0, lt=1 << 64)
    budget_tokens: int | Literal["max"]
    val_fraction: float = Field(default=0.01, ge=0, lt=0.5)
    overlap: Literal["error", "first"] = "error"
    shard_tokens: int = Field(default=1 << 28, gt=0)
    tokenizer: TokenizerSpec = TokenizerSpec()
    sources: dict[str, SourceSpec] = Field(min_length=1)

    @field_validator("budget_tokens")
    @classmethod
    def _budget(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("budget_tokens must be positive or 'max'")
        return v

    @field_validator("sources")
    @classmethod
    def _names(cls, v: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        for name in v:
            if not _SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r} must match {_SOURCE_NAME.pattern} (it names files)")
        return v


def load_mixture(path: str | Path) -> MixtureSpec:
    """Read and validate a mixture YAML; errors name the key and the file."""
    data = read_yaml_mapping(path, "mixture")
    return build_config(MixtureSpec, data, f"mixture {path}")  # type: ignore[return-value]


class MixConfig(StageConfig):
    """Config of the mix stage.

    Attributes:
        mixture: a mixture YAML path, or the mixture inline. A path is read when the config is
            built, so the config (and its hash) carries the mixture's content.
        mixture_file: the file the mixture came from (set automatically).
        batch_docs: documents per ``encode_batch`` call.
        keep_work: keep the per-shard token arrays in ``_work/`` after success.
    """

    mixture: MixtureSpec
    mixture_file: str | None = None
    batch_docs: int = Field(default=256, gt=0)
    keep_work: bool = False

    @model_validator(mode="before")
    @classmethod
    def _load_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mixture"), str):
            data = dict(data)
            data["mixture_file"] = data["mixture"]
            data["mixture"] = load_mixture(data["mixture"]).model_dump(mode="json")
        elif isinstance(data, dict) and isinstance(data.get("mixture"), dict):
            # Validate inline mixtures here so that errors name the mixture, not the pipeline key path.
            data = dict(data)
            data["mixture"] = build_config(MixtureSpec, data["mixture"], "inline mixture").model_dump(mode="json")
        return data


# ----------------------------------------------------------------------------- source assignment


def assignment_sql(mix: MixtureSpec, table: str) -> str:
    """SELECT of (row, src, n_match): ``src`` is the first matching source's index or -1."""
    preds = [f"COALESCE(({s.where}), FALSE)" for s in mix.sources.values()]
    case = " ".join(f"WHEN {p} THEN {i}" for i, p in enumerate(preds))
    n_match = " + ".join(f"CAST({p} AS INTEGER)" for p in preds)
    return f"SELECT __row, CASE {case} ELSE -1 END AS src, {n_match} AS n_match FROM {table} ORDER BY __row"


def validate_predicates(mix: MixtureSpec, shard: Path, where: str) -> None:
    """Bind every ``where`` against a shard's schema; a bad one is a ConfigError naming the source."""
    con = duckdb.connect()
    lit = "'" + str(shard).replace("'", "''") + "'"
    for name, s in mix.sources.items():
        try:
            desc = con.execute(f"DESCRIBE SELECT ({s.where}) AS m FROM read_parquet({lit})").fetchall()
        except duckdb.Error as e:
            raise ConfigError(f"{where}: source {name!r}: bad `where` predicate {s.where!r}: {e}") from None
        if desc[0][1] != "BOOLEAN":
            raise ConfigError(f"{where}: source {name!r}: `where` {s.where!r} is {desc[0][1]}, not a boolean")


def assign_sources(mix: MixtureSpec, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the source index (-1 when unassigned) and the number of matching sources."""
    t = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    con.register("docs", t)
    res = con.execute(assignment_sql(mix, "docs")).fetchnumpy()
    return np.asarray(res["src"], dtype=np.int16), np.asarray(res["n_match"], dtype=np.int32)


# ----------------------------------------------------------------------------- hashing


def val_hash(doc_id: str) -> int:
    """Stable, seed-independent hash of a document id that decides the validation split."""
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8"))


def order_key(doc_id: str, seed: int) -> int:
    """Seeded hash of a document id: the partial-epoch order and pass assignment."""
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8"), seed=seed & 0xFFFFFFFFFFFFFFFF)


# ----------------------------------------------------------------------------- phase 1


class TokenizeWorker:
    """Phase 1, one input shard per call: assign sources, tokenise, write token arrays + index."""

    def __init__(self, tokenizer_json: str, mixture: dict, work_dir: str, out_dir: str, batch_docs: int):
        self.mix = MixtureSpec.model_validate(mixture)
        self.tok = bpe.load_tokenizer(tokenizer_json)
        # A literal "<|endoftext|>" in a document is text, not a document boundary.
        self.tok.encode_special_tokens = True
        self.eos = bpe.eos_id(self.tok, self.mix.tokenizer.eos_token)
        self.dtype = bpe.token_dtype(self.tok.get_vocab_size())
        self.work = Path(work_dir)
        self.out = Path(out_dir)
        self.batch_docs = batch_docs

    def __call__(self, task: dict) -> dict:
        i, path = task["index"], Path(task["path"])
        table = read_parquet(path)
        n_src = len(self.mix.sources)
        src, n_match = assign_sources(self.mix, table)
        overlaps = np.flatnonzero(n_match > 1)
        if len(overlaps) and self.mix.overlap == "error":
            row = int(overlaps[0])
            names = list(self.mix.sources)
            hits = [names[j] for j, s in enumerate(self.mix.sources.values()) if _matches(s.where, table.slice(row, 1))]
            return {
                "index": i,
                "error": f"{len(overlaps)} document(s) in {path} match more than one source, e.g. id "
                f"{table.column('id')[row].as_py()!r} matches {hits}; make the `where` predicates "
                f"disjoint or set `overlap: first` (first matching source wins)",
            }
        unassigned = src < 0
        rej = table.filter(pa.array(unassigned))
        rej = make_rejected(rej, "mix", [REASONS["unassigned"]] * rej.num_rows) if rej.num_rows else (
            rejected_schema(table.schema).empty_table()
        )
        rej_info = write_parquet(rej, self.out / "rejected" / f"part-{i:05d}.parquet")

        rows = np.flatnonzero(~unassigned)
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        del table
        idx = np.zeros(len(rows), INDEX_DTYPE)
        idx["row"] = rows
        idx["src"] = src[rows]
        tok_path = self.work / f"tok-{i:05d}.bin"
        tmp = tok_path.with_name(tok_path.name + f".{os.getpid()}.tmp")
        off = 0
        with open(tmp, "wb") as f:
            for b in range(0, len(rows), self.batch_docs):
                sel = rows[b : b + self.batch_docs]
                flat, lengths = bpe.encode_docs(self.tok, [texts[r] or "" for r in sel], self.dtype)
                flat.tofile(f)
                idx["off"][b : b + len(sel)] = off + np.concatenate(([0], np.cumsum(lengths)[:-1]))
                idx["len"][b : b + len(sel)] = lengths + 1  # + EOS
                off += int(lengths.sum())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, tok_path)
        hvals = np.fromiter((val_hash(ids[r]) for r in rows), dtype=np.uint64, count=len(rows))
        idx["val"] = (hvals >> np.uint64(11)) < np.uint64(int(self.mix.val_fraction * (1 << 53)))
        idx["key"] = np.fromiter((order_key(ids[r], self.mix.seed) for r in rows), dtype=np.uint64, count=len(rows))

        per, hists = [], np.zeros((n_src, 1 << HIST_BITS), np.int64)
        for s in range(n_src):
            m = idx["src"] == s
            tr = m & (idx["val"] == 0)
            va = m & (idx["val"] == 1)
            hists[s] = np.bincount((idx["key"][tr] >> np.uint64(64 - HIST_BITS)).astype(np.int64),
                                   weights=idx["len"][tr], minlength=1 << HIST_BITS).astype(np.int64)
            cand = None
            if m.any():
                j = np.flatnonzero(m)[np.argmin(hvals[m])]
                cand = [int(hvals[j]), int(idx["row"][j]), int(idx["len"][j]), int(idx["key"][j])]
            per.append({
                "docs": int(m.sum()),
                "tokens": int(idx["len"][m].sum()),
                "train_docs": int(tr.sum()),
                "train_tokens": int(idx["len"][tr].sum()),
                "val_docs": int(va.sum()),
                "val_tokens": int(idx["len"][va].sum()),
                "min_val_hash": cand,
            })
        idx_info = atomic_write_bytes(self.work / f"idx-{i:05d}.npy", _npy_bytes(idx))
        # Per-source histograms of seeded keys (train tokens per bin): a work file, so that
        # the driver's memory does not grow with the shard count.
        hist_info = atomic_write_bytes(self.work / f"hist-{i:05d}.npy", _npy_bytes(hists))
        return {
            "index": i,
            "input_rows": len(src),
            "unassigned": int(unassigned.sum()),
            "overlap_docs": int(len(overlaps)),
            "sources": per,
            "rejected": rej_info,
            "files": [rej_info, file_info(tok_path), idx_info, hist_info],
        }


def _matches(where: str, one_row: pa.Table) -> bool:
    con = duckdb.connect()
    con.register("d", one_row)
    return bool(con.execute(f"SELECT COALESCE(({where}), FALSE) FROM d").fetchone()[0])


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- tokenizer


def sample_texts(mix: MixtureSpec, shards: list[Path]) -> Iterator[str]:
    """About ``sample_bytes`` of assigned text, chosen by a seeded hash of the id, shard by shard."""
    total = 0
    for p in shards:
        md = pq.ParquetFile(p).metadata
        col = md.schema.to_arrow_schema().get_field_index("text")
        total += sum(md.row_group(g).column(col).total_uncompressed_size for g in range(md.num_row_groups))
    frac = min(1.0, mix.tokenizer.sample_bytes / max(total, 1))
    limit = int(frac * (1 << 64))
    for p in shards:
        table = read_parquet(p)
        src, _ = assign_sources(mix, table)
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        for r in np.flatnonzero(src >= 0):
            if texts[r] and xxhash.xxh64_intdigest(ids[r].encode(), seed=mix.seed ^ 0x70C) < limit:
                yield texts[r]


def prepare_tokenizer(mix: MixtureSpec, shards: list[Path], out_dir: Path) -> str:
    """Load or train the tokenizer, write ``out_dir/tokenizer.json``; return its JSON text."""
    spec = mix.tokenizer
    target = out_dir / "tokenizer.json"
    src = spec.file(out_dir.parent)  # a stage directory's parent is the run directory
    if src is not None:
        if not src.is_file():
            raise ConfigError(f"mixture {mix.name!r}: tokenizer file not found: {src}")
        blob = src.read_text(encoding="utf-8")
        try:
            tok = bpe.load_tokenizer(blob)
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise ConfigError(f"mixture {mix.name!r}: cannot load tokenizer {src}: {e}") from None
    else:
        tok = bpe.train_bpe(sample_texts(mix, shards), spec.vocab_size, spec.eos_token, spec.min_frequency)
        blob = bpe.tokenizer_json(tok)
    try:
        bpe.eos_id(tok, spec.eos_token)
    except ValueError as e:
        raise ConfigError(f"mixture {mix.name!r}: {e}; set tokenizer.eos_token") from None
    atomic_write_bytes(target, blob.encode("utf-8"))
    return blob


# ----------------------------------------------------------------------------- phase 3 helpers


DOCS_DTYPE = np.dtype([("off", "<i8"), ("len", "<i8"), ("src", "<i2")])


class TokenWriter:
    """Appends tokens to ``<prefix>-NNNNN.bin.tmp`` files of at most ``shard_tokens`` tokens each.

    With ``doc_sidecar`` every file gets ``<prefix>-NNNNN.docs.npy`` beside it: one
    :data:`DOCS_DTYPE` row (offset and length in the file's tokens, source index) per document,
    in file order; a document that crosses a file boundary has a row in each file.
    """

    def __init__(self, out_dir: Path, prefix: str, dtype: np.dtype, shard_tokens: int, doc_sidecar: bool = False):
        self.out_dir, self.prefix, self.dtype, self.cap = out_dir, prefix, dtype, shard_tokens
        self.files: list[dict] = []
        self._f = None
        self._h = None
        self._n = 0
        self.tokens = 0
        self._docs: list[np.ndarray] | None = [] if doc_sidecar else None

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.files):05d}.bin"
        self.files.append({"path": name, "tokens": 0})
        self._f = open(self.out_dir / (name + ".tmp"), "wb")
        self._h = hashlib.sha256()
        self._n = 0

    def _close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self.files[-1]["tokens"] = self._n
            self.files[-1]["sha256"] = self._h.hexdigest()
            self._f = None
            if self._docs is not None:
                self._write_sidecar(len(self.files) - 1)

    def write(self, arr: np.ndarray, lengths: np.ndarray | None = None, src: np.ndarray | None = None) -> None:
        """Append ``arr``; with a sidecar, ``lengths`` and ``src`` give its documents in order."""
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if self._docs is not None:
            if lengths is None or src is None or int(np.sum(lengths)) != len(arr):
                raise ValueError("a writer with a document sidecar needs the lengths and sources of what it writes")
            rec = np.zeros(len(lengths), DOCS_DTYPE)
            rec["len"] = lengths
            rec["off"] = self.tokens + np.cumsum(lengths) - lengths  # offset in this writer's whole stream
            rec["src"] = src
            self._docs.append(rec)
        pos = 0
        while pos < len(arr):
            if self._f is None or self._n >= self.cap:
                self._close()
                self._open()
            take = min(self.cap - self._n, len(arr) - pos)
            chunk = arr[pos : pos + take].tobytes()
            self._f.write(chunk)
            self._h.update(chunk)
            self._n += take
            self.tokens += take
            pos += take

    def finish(self) -> list[dict]:
        """Close and rename every file into place (a writer given no tokens leaves no file)."""
        self._close()
        for f in self.files:
            os.replace(self.out_dir / (f["path"] + ".tmp"), self.out_dir / f["path"])
        return self.files

    def _write_sidecar(self, k: int) -> None:
        """The sidecar of file ``k`` (just closed); only documents not yet finished stay in
        memory, so the writer holds at most one file's documents."""
        f = self.files[k]
        docs = np.concatenate(self._docs) if self._docs else np.zeros(0, DOCS_DTYPE)
        start, end = docs["off"], docs["off"] + docs["len"]
        a, b = k * self.cap, k * self.cap + f["tokens"]  # every file but the last holds ``cap`` tokens
        sel = docs[(end > a) & (start < b)].copy()
        lo, hi = np.maximum(sel["off"], a), np.minimum(sel["off"] + sel["len"], b)
        sel["off"], sel["len"] = lo - a, hi - lo
        name = f["path"][: -len(".bin")] + ".docs.npy"
        blob = _npy_bytes(sel)
        atomic_write_bytes(self.out_dir / name, blob)
        f["docs"], f["docs_sha256"] = name, hashlib.sha256(blob).hexdigest()
        rest = docs[end > b]
        self._docs = [rest] if len(rest) else []


def gather_docs(tokens: np.ndarray, off: np.ndarray, emit: np.ndarray, eos: int) -> np.ndarray:
    """Concatenate, per document, its first ``emit - 1`` tokens and EOS (``emit`` counts EOS)."""
    total = int(emit.sum())
    out = np.empty(total, dtype=tokens.dtype)
    if total == 0:
        return out
    body = emit - 1
    ends = np.cumsum(emit)
    eos_pos = ends - 1
    starts_out = ends - emit
    n_body = int(body.sum())
    if n_body:
        rep_start = np.repeat(off - starts_out, body)
        dst = np.arange(total)
        mask = np.ones(total, dtype=bool)
        mask[eos_pos] = False
        dst = dst[mask]
        out[dst] = tokens[dst + rep_start]
    out[eos_pos] = eos
    return out


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([w for p in parts for w in (p & 0xFFFFFFFF, (p >> 32) & 0xFFFFFFFF)])


# ----------------------------------------------------------------------------- the stage


class MixStage(GlobalStage):
    """Tokenise any document stage's output into a weighted, packed pretraining mixture."""

    name = "mix"
    version = "1"
    Config = MixConfig

    def stage_refs(self) -> list[str]:
        """The stage the tokenizer comes from (``tokenizer.from_stage``) runs first."""
        ref = self.config.mixture.tokenizer.from_stage  # type: ignore[attr-defined]
        return [ref] if ref else []

    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        """A user's (or another stage's) tokenizer file: a changed tokenizer makes a finished
        mixture stale."""
        tok = self.config.mixture.tokenizer.file(run_dir)  # type: ignore[attr-defined]
        if tok and tok.is_file():
            from curate.shardio import sha256_file

            return [("tokenizer", sha256_file(tok))]
        return []

    def run(self, ctx: GlobalContext) -> dict[str, Any]:
        cfg: MixConfig = self.config  # type: ignore[assignment]
        mix = cfg.mixture
        where = f"mixture {cfg.mixture_file or mix.name!r} of stage {ctx.stage_name!r}"
        shards = [Path(p) for p in ctx.input_shards]
        if not shards:
            raise ConfigError(f"stage {ctx.stage_name!r}: no input shards")
        validate_predicates(mix, shards[0], where)
        out = Path(ctx.out_dir)
        work = out / "_work"
        work.mkdir(parents=True, exist_ok=True)
        (out / "rejected").mkdir(exist_ok=True)

        # Phase "tokenizer": trained on a sample (or a user's file, read again: its content, not
        # its path, is in the stage's key through extra_inputs), written to tokenizer.json.
        ph = ctx.phases
        tres = ph.step("tokenizer", lambda: {"files": [_tokenizer_file(mix, shards, out)]})
        tok_json = ph.file(tres["files"][0]).read_text(encoding="utf-8")
        thash = bpe.tokenizer_hash(tok_json)
        tok = bpe.load_tokenizer(tok_json)
        vocab = tok.get_vocab_size()
        dtype = bpe.token_dtype(vocab)
        eos = bpe.eos_id(tok, mix.tokenizer.eos_token)

        # Phase "tokenise": per shard; results are folded into per-source totals.
        names = list(mix.sources)
        totals = _new_totals(len(names))
        tasks = [{"index": i, "path": str(p)} for i, p in enumerate(shards)]
        init = (tok_json, mix.model_dump(mode="json"), str(work), str(out), cfg.batch_docs)
        results = ph.map("tokenise", TokenizeWorker, init, tasks, desc=f"{ctx.stage_name}: tokenise")
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise ConfigError(f"{where}: {errors[0]}")
        ordered = [_fold(totals, r, work) for r in results]
        mhash = config_hash(mix)
        res = ph.step("pack", lambda: self._plan_and_pack(
            work, out, shards, totals, ordered, names, mhash, thash, vocab, dtype, eos))
        return GlobalResult(**res["result"])

    def _plan_and_pack(self, work: Path, out: Path, shards: list[Path], totals: list[dict], ordered: list[dict],
                       names: list[str], mhash: str, thash: str, vocab: int, dtype: np.dtype, eos: int) -> dict:
        """Phases "pack" (a driver step): plan the epochs, pack the token files, write the reports."""
        cfg: MixConfig = self.config  # type: ignore[assignment]
        mix = cfg.mixture
        # Phase 2: plan.
        forced = _force_val(totals, mix.val_fraction)
        supplies = [
            SourceSupply(n, totals[j]["train_tokens"], s.weight, s.max_epochs)
            for j, (n, s) in enumerate(mix.sources.items())
        ]
        mplan = plan(supplies, None if mix.budget_tokens == "max" else int(mix.budget_tokens))
        cuts = _partial_cuts(work, len(shards), mplan, totals, forced)

        # Phase 3: pack (token files of an earlier, different attempt are removed first).
        for stale in out.glob("*.bin"):
            stale.unlink()
        packed = _pack(work, len(shards), mix, mplan, cuts, forced, dtype, eos, out)
        for j, sp in enumerate(mplan.sources):
            if packed["train_tokens"][j] != sp.tokens:
                raise RuntimeError(
                    f"internal error: source {sp.name!r} packed {packed['train_tokens'][j]} tokens, planned {sp.tokens}"
                )

        # Reports.
        sources_rows = []
        src_meta = {}
        for j, (n, s) in enumerate(mix.sources.items()):
            sp, t = mplan.sources[j], totals[j]
            row = {
                "source": n,
                "where": s.where,
                "docs": t["docs"],
                "tokens": t["tokens"],
                "train_docs": t["train_docs"],
                "val_docs": t["val_docs"],
                "train_tokens_available": t["train_tokens"],
                "val_tokens": t["val_tokens"],
                "target_weight": sp.target_weight,
                "achieved_weight": sp.achieved_weight,
                "max_epochs": s.max_epochs,
                "epochs": sp.epochs,
                "full_epochs": sp.full_epochs,
                "train_tokens": sp.tokens,
                "train_doc_copies": packed["copies"][j],
                "truncated_docs": int(j in cuts and cuts[j]["trunc"] < cuts[j]["len"]),
            }
            sources_rows.append(row)
            src_meta[n] = {k: v for k, v in row.items() if k != "source"}
        write_parquet(pa.Table.from_pylist(sources_rows), out / "sources.parquet")

        n_in = sum(r["input_rows"] for r in ordered)
        n_unassigned = sum(r["unassigned"] for r in ordered)
        meta = {
            "format": FORMAT,
            "mixture": mix.name,
            "mixture_file": cfg.mixture_file,
            "mixture_hash": mhash,
            "seed": mix.seed,
            "tokenizer": {
                "file": "tokenizer.json",
                "sha256": thash,
                "vocab_size": vocab,
                "eos_token": mix.tokenizer.eos_token,
                "eos_id": eos,
                "trained": mix.tokenizer.file(out.parent) is None,
                "source_path": mix.tokenizer.path,
                "source_stage": mix.tokenizer.from_stage,
            },
            "dtype": dtype.name,
            "budget_tokens": mplan.budget,
            "budget_request": mix.budget_tokens,
            "train": {"tokens": packed["train"].tokens, "files": packed["train"].files},
            "train_docs": {
                "about": "train-NNNNN.docs.npy beside each train file: one row per document (a document "
                "crossing a file boundary has a row in each file); src indexes `sources`",
                "fields": {"off": "<i8", "len": "<i8", "src": "<i2"},
                "sources": names,
            },
            "val": {
                "tokens": sum(w.tokens for w in packed["val"].values()),
                "files": [dict(f, source=n) for n, w in packed["val"].items() for f in w.files],
            },
            "split": {
                "val_fraction": mix.val_fraction,
                "rule": "xxh3_64(utf-8 id) >> 11 < val_fraction * 2**53, per source; a source with "
                "no such document but at least two keeps its lowest-hash document",
            },
            "passes": mplan.max_passes,
            "sources": src_meta,
            "input_docs": n_in,
            "unassigned_docs": n_unassigned,
        }
        atomic_write_json(out / "meta.json", meta)

        outputs = [
            {"path": str(out / f["path"]), "tokens": f["tokens"], "sha256": f["sha256"]}
            for f in meta["train"]["files"] + meta["val"]["files"]
        ] + [{"path": str(out / n), "sha256": sha256_file(out / n)} for n in ("meta.json", "sources.parquet", "tokenizer.json")]
        written = [file_info(p) for p in sorted(out.iterdir()) if p.is_file() and p.suffix in (".bin", ".npy", ".json",
                                                                                               ".parquet")]
        result = {
            "input_rows": n_in,
            "kept_rows": n_in - n_unassigned,
            "rejected_rows": n_unassigned,
            "reasons": {REASONS["unassigned"]: n_unassigned} if n_unassigned else {},
            "accounting": {
                "note": "documents are sampled by token weights with epochs, not kept/rejected; "
                "every input document is assigned to one source or counted as unassigned "
                "(rejected/, reason mix.unassigned)",
                "docs_per_source": {n: totals[j]["docs"] for j, n in enumerate(names)},
                "epochs_per_source": {sp.name: sp.epochs for sp in mplan.sources},
                "train_doc_copies_per_source": {n: packed["copies"][j] for j, n in enumerate(names)},
                "unassigned": n_unassigned,
                "overlap_docs": sum(r["overlap_docs"] for r in ordered),
            },
            "extra": {
                "mixture": {
                    "budget_tokens": mplan.budget,
                    "tokenizer_sha256": thash,
                    "train_tokens": packed["train"].tokens,
                    "val_tokens": meta["val"]["tokens"],
                    "target_weights": {sp.name: sp.target_weight for sp in mplan.sources},
                    "achieved_weights": {sp.name: sp.achieved_weight for sp in mplan.sources},
                },
            },
            "outputs": outputs,
            "rejected_outputs": [r["rejected"] for r in ordered],
        }
        return {"result": result, "files": written}


def _tokenizer_file(mix: MixtureSpec, shards: list[Path], out: Path) -> dict:
    prepare_tokenizer(mix, shards, out)
    return file_info(out / "tokenizer.json")


_COUNTS = ("docs", "tokens", "train_docs", "train_tokens", "val_docs", "val_tokens")


def _new_totals(n_src: int) -> list[dict]:
    totals = []
    for _ in range(n_src):
        t: dict[str, Any] = {k: 0 for k in _COUNTS}
        t["hist"] = np.zeros(1 << HIST_BITS, dtype=np.int64)
        t["min_val"] = None
        totals.append(t)
    return totals


def _fold(totals: list[dict], r: dict, work: Path) -> dict:
    """Add one shard's per-source counts, key histogram and lowest-val-hash document to ``totals``.

    Returns the shard's result without the per-source details (kept per shard for the manifest).
    """
    if "error" in r:
        return r
    hists = np.load(work / f"hist-{r['index']:05d}.npy", allow_pickle=False)
    for t, s, h in zip(totals, r["sources"], hists):
        for k in _COUNTS:
            t[k] += s[k]
        t["hist"] += h
        if s["min_val_hash"] is not None:
            h, row, length, key = s["min_val_hash"]
            cand = (h, r["index"], row, length, key)
            if t["min_val"] is None or cand < t["min_val"]:
                t["min_val"] = cand
    return {k: v for k, v in r.items() if k != "sources"}


def _force_val(totals: list[dict], fraction: float) -> dict[int, tuple[int, int]]:
    """Hold out the lowest-hash document of each source that has no validation document but >= 2.

    Adjusts ``totals`` (train/val counts and the train-key histogram) in place and returns
    source index -> (shard, row) of each forced document.
    """
    forced: dict[int, tuple[int, int]] = {}
    if fraction <= 0:
        return forced
    for j, t in enumerate(totals):
        if t["val_docs"] == 0 and t["docs"] >= 2 and t["min_val"] is not None:
            _, shard, row, length, key = t["min_val"]
            forced[j] = (shard, row)
            t["train_docs"] -= 1
            t["train_tokens"] -= length
            t["val_docs"] += 1
            t["val_tokens"] += length
            t["hist"][key >> (64 - HIST_BITS)] -= length
    return forced


def _load_index(work: Path, i: int) -> np.ndarray:
    return np.load(work / f"idx-{i:05d}.npy", mmap_mode="r", allow_pickle=False)


def _load_tokens(work: Path, i: int, dtype: np.dtype) -> np.ndarray:
    p = work / f"tok-{i:05d}.bin"
    if p.stat().st_size == 0:
        return np.empty(0, dtype)
    return np.memmap(p, dtype=dtype, mode="r")


def _train_mask(idx: np.ndarray, shard: int, forced: dict[int, tuple[int, int]]) -> np.ndarray:
    train = idx["val"] == 0
    for j, (fi, frow) in forced.items():
        if fi == shard:
            train &= ~((idx["src"] == j) & (idx["row"] == frow))
    return train


def _partial_cuts(work: Path, n_shards: int, mplan: MixPlan, totals: list[dict], forced) -> dict[int, dict]:
    """Where each source's partial epoch stops.

    The partial epoch of source ``j`` takes its train documents in ascending
    ``(key, shard, row)`` order until ``partial_tokens`` are reached; the last one (the cut)
    is truncated to the tokens still missing. The key histogram finds the bin that holds the
    cut, so only that bin's documents are collected (one index scan for all sources).

    Returns source index -> {"key", "shard", "row", "trunc", "len"}.
    """
    want: dict[int, tuple[int, int]] = {}  # source -> (bin, tokens still needed inside the bin)
    for j, sp in enumerate(mplan.sources):
        if sp.partial_tokens <= 0:
            continue
        cum = np.cumsum(totals[j]["hist"])
        b = int(np.searchsorted(cum, sp.partial_tokens, side="left"))
        before = int(cum[b - 1]) if b > 0 else 0
        want[j] = (b, sp.partial_tokens - before)
    if not want:
        return {}
    cands: dict[int, list[tuple[int, int, int, int]]] = {j: [] for j in want}
    shift = np.uint64(64 - HIST_BITS)
    for i in range(n_shards):
        idx = _load_index(work, i)
        train = _train_mask(idx, i, forced)
        bins = (idx["key"] >> shift).astype(np.int64)
        for j, (b, _) in want.items():
            for k in np.flatnonzero(train & (idx["src"] == j) & (bins == b)):
                cands[j].append((int(idx["key"][k]), i, int(idx["row"][k]), int(idx["len"][k])))
    cuts = {}
    for j, (b, need) in want.items():
        acc = 0
        for key, i, row, length in sorted(cands[j]):
            if acc + length >= need:
                cuts[j] = {"key": key, "shard": i, "row": row, "trunc": need - acc, "len": length}
                break
            acc += length
        else:
            raise RuntimeError(f"internal error: partial epoch of source {mplan.sources[j].name!r} not found in bin {b}")
    return cuts


def _pack(work: Path, n_shards: int, mix: MixtureSpec, mplan: MixPlan, cuts: dict, forced, dtype, eos: int, out: Path) -> dict:
    """Phase 3: stream the planned copies into train files and held-out docs into val files.

    Pass ``p`` (of ``P``) visits shards in a seeded order and each shard's documents in a
    seeded order. A train document with ``m`` copies (``full_epochs`` plus one if the partial
    epoch takes it) puts copy ``c`` in pass ``(key + c) mod P``, so no document repeats within
    a pass and every pass holds about ``1/P`` of each source; the truncated cut document's
    copy is its last one. Validation documents are written once, during pass 0.
    """
    n_src = len(mplan.sources)
    P = mplan.max_passes
    full = np.array([sp.full_epochs for sp in mplan.sources], dtype=np.int64)
    names = [sp.name for sp in mplan.sources]
    train_w = TokenWriter(out, "train", dtype, mix.shard_tokens, doc_sidecar=True)
    val_w = {n: TokenWriter(out, f"val-{n}", dtype, mix.shard_tokens) for n in names}
    train_tokens = np.zeros(n_src, dtype=np.int64)
    copies = np.zeros(n_src, dtype=np.int64)
    for p in range(P):
        for i in _rng(mix.seed, p).permutation(n_shards):
            i = int(i)
            idx = _load_index(work, i)
            if len(idx) == 0:
                continue
            tokens = _load_tokens(work, i, dtype)
            d = idx[_rng(mix.seed, p, i).permutation(len(idx))]
            src = d["src"].astype(np.int64)
            key, row, length = d["key"], d["row"], d["len"]
            train = _train_mask(d, i, forced)
            part = np.zeros(len(d), dtype=bool)
            cut = np.zeros(len(d), dtype=bool)
            for j, c in cuts.items():
                m = src == j
                ck = np.uint64(c["key"])
                before = (key < ck) | ((key == ck) & ((i < c["shard"]) | ((i == c["shard"]) & (row < c["row"]))))
                part |= m & before
                cut |= m & (key == ck) & (i == c["shard"]) & (row == c["row"])
            mult = np.where(train, full[src] + (part | cut), 0)
            copy = (p - (key % np.uint64(P)).astype(np.int64)) % P
            emit = np.where(copy < mult, length, 0)
            last = cut & (copy == mult - 1) & (mult > 0)
            if last.any():
                for k in np.flatnonzero(last):
                    emit[k] = cuts[int(src[k])]["trunc"]
            sel = np.flatnonzero(emit > 0)
            if len(sel):
                train_w.write(gather_docs(tokens, d["off"][sel], emit[sel], eos), emit[sel], src[sel])
                train_tokens += np.bincount(src[sel], weights=emit[sel], minlength=n_src).astype(np.int64)
                copies += np.bincount(src[sel], minlength=n_src)
            if p == 0:
                for j, n in enumerate(names):
                    v = np.flatnonzero(~train & (src == j))
                    if len(v):
                        val_w[n].write(gather_docs(tokens, d["off"][v], length[v], eos))
    train_w.finish()
    for w in val_w.values():
        w.finish()
    return {"train": train_w, "val": val_w, "train_tokens": train_tokens.tolist(), "copies": copies.tolist()}


STAGE = MixStage
