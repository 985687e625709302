"""Vocab: extend a base tokenizer with pieces learned on domain text (``filters.vocab``).

The stage reads documents from one input stage (``text_from``, default the first input) and
the base tokenizer from a file (``base``) or from another input stage's output directory
(``base_from``, e.g. the mix stage's ``tokenizer.json``: ``input: [quality, mix]``).
Documents are selected by DuckDB predicates over the shard columns: ``domain_where`` (the
text to learn from) and ``general_where`` (text whose tokenisation should not change).
Each side is split by a stable hash of the document id (``xxh3_64(id) >> 11 <
heldout_fraction * 2**53``, the mix stage's validation rule, so with the same fraction the
mixture's validation documents are the ones the vocabulary never saw): the training part of
the domain side is learned from, the training part of the general side protects its pairs
(``protect_ratio``), and the held-out parts of both are measured.

Phases (``ctx.phases``): ``count`` (map, per shard: base-tokenised word counts and held-out
texts into ``_work/``), ``learn`` (driver: continuation BPE, extended tokenizer, id map),
``evaluate`` (map, per shard: held-out token counts before/after), ``report`` (driver).

Outputs: ``tokenizer.json`` (``tokenizer.model`` for a sentencepiece base), ``id_map.json``
(format ``curate-vocab/1``), ``report.json`` and ``report.md`` (the compression table).
The stage passes no documents on: its manifest's ``accounting`` counts every input
document in exactly one role (domain train/held-out, general train/held-out, unused).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field, model_validator

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.shardio import atomic_write_bytes, atomic_write_json, file_info, read_parquet, sha256_file, write_parquet
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters import vocab as V

ROLES = ("domain_train", "domain_heldout", "general_train", "general_heldout", "unused")


class VocabConfig(StageConfig):
    """Config of the vocab stage.

    Attributes:
        base: the base tokenizer file (``tokenizer.json`` or a sentencepiece ``.model``);
            relative paths resolve against the current directory.
        base_from: instead of ``base``, a pipeline stage whose output directory holds it
            (listed in ``input:`` or not: either way it runs first and its file's checksum
            counts toward resume).
        base_file: the file name inside ``base_from``'s directory.
        text_from: the input stage whose documents are read (default: the first input).
        domain_where: DuckDB predicate selecting the domain documents.
        general_where: DuckDB predicate selecting general documents (measured, and
            protected when ``protect_ratio`` > 0); ``null`` for none. A document matching
            both counts as domain.
        heldout_fraction: share of each side held out for the report.
        max_new: most new pieces (characters + merges).
        min_frequency: a character or pair seen fewer times in the training words is not added.
        piece_filter: ``non_ascii`` (every new piece holds a non-ASCII byte, so pieces never
            fire on plain ASCII text) or ``any``.
        protect_ratio: a pair (or character) whose rate in the general training text is at
            least this times its rate in the domain text is not added; 0 turns it off.
        top_pieces: how many of the most used new pieces the report lists.
        batch_docs: documents per tokenizer batch.
    """

    base: str | None = None
    base_from: str | None = None
    base_file: str = "tokenizer.json"
    text_from: str | None = None
    domain_where: str = "lang = 'zh'"
    general_where: str | None = "lang = 'en'"
    heldout_fraction: float = Field(default=0.1, gt=0, lt=1)
    max_new: int = Field(default=20_000, ge=1, le=1 << 20)
    min_frequency: int = Field(default=2, ge=1)
    piece_filter: Literal["non_ascii", "any"] = "non_ascii"
    protect_ratio: float = Field(default=0.01, ge=0)
    top_pieces: int = Field(default=30, ge=0)
    batch_docs: int = Field(default=256, gt=0)

    @model_validator(mode="after")
    def _one_base(self):
        if (self.base is None) == (self.base_from is None):
            raise ValueError("set exactly one of `base` (a tokenizer file) and `base_from` (an input stage)")
        return self


def heldout_mask(ids: list[str], fraction: float) -> np.ndarray:
    """True for documents held out: ``xxh3_64(utf-8 id) >> 11 < fraction * 2**53``."""
    h = np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8")) for i in ids), dtype=np.uint64, count=len(ids))
    return (h >> np.uint64(11)) < np.uint64(int(fraction * (1 << 53)))


def roles(table: pa.Table, cfg: VocabConfig) -> np.ndarray:
    """Per document, its index in :data:`ROLES`."""
    con = duckdb.connect()
    con.register("docs", table.select([c for c in table.column_names if c != "text"]))
    gen = f"COALESCE(({cfg.general_where}), FALSE)" if cfg.general_where else "FALSE"
    res = con.execute(f"SELECT COALESCE(({cfg.domain_where}), FALSE) AS d, {gen} AS g FROM docs").fetchnumpy()
    dom, gen_m = np.asarray(res["d"], dtype=bool), np.asarray(res["g"], dtype=bool) & ~np.asarray(res["d"], dtype=bool)
    held = heldout_mask(table.column("id").to_pylist(), cfg.heldout_fraction)
    out = np.full(table.num_rows, ROLES.index("unused"), dtype=np.int8)
    out[dom & ~held] = ROLES.index("domain_train")
    out[dom & held] = ROLES.index("domain_heldout")
    out[gen_m & ~held] = ROLES.index("general_train")
    out[gen_m & held] = ROLES.index("general_heldout")
    return out


def _check_predicates(cfg: VocabConfig, shard: Path, where: str) -> None:
    con = duckdb.connect()
    lit = "'" + str(shard).replace("'", "''") + "'"
    for key in ("domain_where", "general_where"):
        pred = getattr(cfg, key)
        if not pred:
            continue
        try:
            desc = con.execute(f"DESCRIBE SELECT ({pred}) AS m FROM read_parquet({lit})").fetchall()
        except duckdb.Error as e:
            raise ConfigError(f"{where}: bad `{key}` predicate {pred!r}: {e}") from None
        if desc[0][1] != "BOOLEAN":
            raise ConfigError(f"{where}: `{key}` {pred!r} is {desc[0][1]}, not a boolean")


def _encode_words(counts: Counter) -> tuple[list[list[int]], list[int]]:
    """Words as int lists (a character the base lacks as ``-(code point + 1)``) and counts,
    in a canonical order."""
    items = sorted(([s if isinstance(s, int) else -(ord(s) + 1) for s in w], c) for w, c in counts.items())
    return [w for w, _ in items], [c for _, c in items]


def _decode_words(words: list[list[int]], counts: list[int], into: Counter) -> None:
    for w, c in zip(words, counts):
        into[tuple(s if s >= 0 else chr(-s - 1) for s in w)] += c


class CountWorker:
    """Phase ``count``, one input shard per call: roles, word counts, held-out texts."""

    def __init__(self, base_path: str, config: dict, work_dir: str):
        self.cfg = VocabConfig.model_validate(config)
        self.base = V.load_base(Path(base_path).read_bytes(), base_path)
        self.work = Path(work_dir)

    def __call__(self, task: dict) -> dict:
        i = task["index"]
        table = read_parquet(task["path"], columns=None)
        role = roles(table, self.cfg)
        texts = table.column("text").to_pylist()
        del table
        files, stats = [], {"index": i, "input_rows": len(role)}
        for r, name in enumerate(ROLES):
            sel = np.flatnonzero(role == r)
            stats[f"{name}_docs"] = int(len(sel))
            stats[f"{name}_chars"] = int(sum(len(texts[k] or "") for k in sel))
        for kind in ("domain_train", "general_train"):
            if kind == "general_train" and self.cfg.protect_ratio <= 0:
                continue
            sel = np.flatnonzero(role == ROLES.index(kind))
            counts = V.count_words(self.base, (texts[k] or "" for k in sel), self.cfg.batch_docs)
            words, freq = _encode_words(counts)
            t = pa.table({"word": pa.array(words, pa.list_(pa.int32())), "count": pa.array(freq, pa.int64())})
            files.append(write_parquet(t, self.work / f"{kind}-{i:05d}.parquet"))
        held = [(ROLES[role[k]].split("_")[0], texts[k] or "") for k in range(len(role))
                if ROLES[role[k]].endswith("heldout")]
        t = pa.table({"side": pa.array([s for s, _ in held], pa.string()),
                      "text": pa.array([x for _, x in held], pa.large_string())})
        files.append(write_parquet(t, self.work / f"heldout-{i:05d}.parquet"))
        stats["files"] = files
        return stats


class EvalWorker:
    """Phase ``evaluate``, one shard's held-out texts per call: token counts before/after."""

    def __init__(self, base_path: str, extended_path: str, batch_docs: int):
        self.base = V.load_base(Path(base_path).read_bytes(), base_path)
        self.ext = Path(extended_path).read_bytes()
        self.batch = batch_docs

    def __call__(self, task: dict) -> dict:
        t = read_parquet(task["path"])
        side, texts = t.column("side").to_pylist(), t.column("text").to_pylist()
        dom = [x for s, x in zip(side, texts) if s == "domain"]
        gen = [x for s, x in zip(side, texts) if s == "general"]
        c = V.compression_counts(self.base, self.ext, dom, gen, self.batch)
        c["index"] = task["index"]
        return c


class VocabStage(GlobalStage):
    """Learn pieces on domain text, append them to a base tokenizer, report the compression."""

    name = "vocab"
    version = "1"
    Config = VocabConfig

    def _base_path(self, run_dir: Path, input_dirs: dict[str, Path] | None = None) -> Path:
        cfg: VocabConfig = self.config  # type: ignore[assignment]
        if cfg.base is not None:
            return Path(cfg.base)
        d = (input_dirs or {}).get(cfg.base_from) or Path(run_dir) / cfg.base_from  # type: ignore[operator]
        return Path(d) / cfg.base_file

    def stage_refs(self) -> list[str]:
        """The stage the base tokenizer comes from (``base_from``) runs first."""
        cfg: VocabConfig = self.config  # type: ignore[assignment]
        return [cfg.base_from] if cfg.base_from else []

    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        """The base tokenizer file: its content decides whether a finished stage is stale."""
        p = self._base_path(run_dir)
        return [("base_tokenizer", sha256_file(p))] if p.is_file() else []

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: VocabConfig = self.config  # type: ignore[assignment]
        where = f"stage {ctx.stage_name!r}"
        names = list(ctx.inputs) or ["input"]
        text_from = cfg.text_from or names[0]
        if ctx.inputs and text_from not in ctx.inputs:
            raise ConfigError(f"{where}: text_from {text_from!r} is not an input of the stage (inputs: {', '.join(names)})")
        shards = [Path(p) for p in (ctx.inputs.get(text_from) if ctx.inputs else ctx.input_shards)]
        if not shards:
            raise ConfigError(f"{where}: input stage {text_from!r} has no shards")
        base_path = self._base_path(ctx.run_dir, ctx.input_dirs)
        if not base_path.is_file():
            raise ConfigError(f"{where}: base tokenizer not found: {base_path}")
        try:
            base = V.load_base(base_path.read_bytes(), str(base_path))
        except V.VocabError as e:
            raise ConfigError(f"{where}: base tokenizer {base_path}: {e}") from None
        _check_predicates(cfg, shards[0], where)
        out, work, ph = Path(ctx.out_dir), ctx.work_dir, ctx.phases
        conf = cfg.model_dump(mode="json")

        tasks = [{"index": i, "path": str(p)} for i, p in enumerate(shards)]
        counted = ph.map("count", CountWorker, (str(base_path), conf, str(work)), tasks,
                         key=base.sha256, desc=f"{ctx.stage_name}: count")
        learned = ph.step("learn", lambda: self._learn(base, counted, ph, out), key=base.sha256)
        ext_path = ph.file(learned["files"][0])
        evals = ph.map("evaluate", EvalWorker, (str(base_path), str(ext_path), cfg.batch_docs),
                       [{"index": r["index"], "path": str(ph.file(r["files"][-1]))} for r in counted],
                       desc=f"{ctx.stage_name}: evaluate")
        rep = ph.step("report", lambda: self._report(base, ext_path, counted, learned, evals, out))

        acc = {name: sum(r[f"{name}_docs"] for r in counted) for name in ROLES}
        n_in = sum(r["input_rows"] for r in counted)
        if sum(acc.values()) != n_in:
            raise RuntimeError(f"internal error: {sum(acc.values())} documents in roles, {n_in} read")
        acc_chars = {name: sum(r[f"{name}_chars"] for r in counted) for name in ROLES}
        return GlobalResult(
            input_rows=n_in,
            accounting={
                "note": "the vocab stage passes no documents on: every input document is counted in "
                "one role (domain/general by the predicates, train/held-out by a hash of the id)",
                "docs": acc,
                "chars": acc_chars,
                "text_from": text_from,
            },
            outputs=learned["files"] + rep["files"],
            extra={"vocab": {k: learned[k] for k in ("pieces_added", "merges_added", "base_vocab_size",
                                                      "vocab_size", "tokenizer_sha256")}
                   | {"domain": rep["domain"], "general": rep["general"]}},
        )

    def _learn(self, base: V.BaseTokenizer, counted: list[dict], ph, out: Path) -> dict:
        cfg: VocabConfig = self.config  # type: ignore[assignment]
        words: Counter = Counter()
        protect: Counter = Counter()
        for r in counted:
            for f in r["files"]:
                p = ph.file(f)
                if p.name.startswith(("domain_train-", "general_train-")):
                    t = read_parquet(p)
                    _decode_words(t.column("word").to_pylist(), t.column("count").to_pylist(),
                                  words if p.name.startswith("domain_train-") else protect)
        if not words:
            raise ConfigError(f"stage {self.stage_name!r}: no domain training text: no document matches "
                              f"domain_where {cfg.domain_where!r} outside the held-out split")
        with _progress(f"{self.stage_name}: learn", cfg.max_new) as tick:
            learned = V.learn(base, words, cfg.max_new, cfg.min_frequency, cfg.piece_filter,
                              protect if cfg.protect_ratio > 0 else None, cfg.protect_ratio, progress=tick)
        blob = base.extend(learned)
        V.check_extension(base, blob, learned)
        tok_info = atomic_write_bytes(out / base.file_name, blob)
        idmap = V.id_map(base, blob, learned)
        atomic_write_json(out / "id_map.json", idmap)
        return {
            "files": [tok_info, file_info(out / "id_map.json")],
            "pieces_added": len(learned.pieces),
            "char_pieces": sum(p.kind == "char" for p in learned.pieces),
            "merges_added": len(learned.merges),
            "base_vocab_size": idmap["base_vocab_size"],
            "vocab_size": idmap["vocab_size"],
            "tokenizer_sha256": idmap["tokenizer_sha256"],
            "training_words": learned.training_words,
            "training_symbols_before": learned.training_symbols_before,
            "training_symbols_after": learned.training_symbols_after,
        }

    def _report(self, base, ext_path: Path, counted, learned: dict, evals: list[dict], out: Path) -> dict:
        cfg: VocabConfig = self.config  # type: ignore[assignment]
        rep = V.summarize(base, ext_path.read_bytes(), evals, cfg.top_pieces)
        rep.update({
            "format": "curate-vocab-report/1",
            "base_tokenizer_sha256": base.sha256,
            "tokenizer_sha256": learned["tokenizer_sha256"],
            "pieces_added": learned["pieces_added"],
            "char_pieces": learned["char_pieces"],
            "merges_added": learned["merges_added"],
            "base_vocab_size": learned["base_vocab_size"],
            "vocab_size": learned["vocab_size"],
            "training": {
                "docs": sum(r["domain_train_docs"] for r in counted),
                "chars": sum(r["domain_train_chars"] for r in counted),
                "protect_docs": sum(r["general_train_docs"] for r in counted) if cfg.protect_ratio > 0 else 0,
                "symbols_before": learned["training_symbols_before"],
                "symbols_after": learned["training_symbols_after"],
            },
            "config": {k: getattr(cfg, k) for k in ("domain_where", "general_where", "heldout_fraction", "max_new",
                                                     "min_frequency", "piece_filter", "protect_ratio")},
        })
        atomic_write_json(out / "report.json", rep)
        atomic_write_bytes(out / "report.md", (V.report_table(rep) + "\n").encode("utf-8"))
        return {"files": [file_info(out / "report.json"), file_info(out / "report.md")],
                "domain": rep["domain"], "general": rep["general"]}


class _progress:
    """A rich progress bar over the pieces learned (hidden when not a terminal)."""

    def __init__(self, desc: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), transient=False,
                            disable=not sys.stderr.isatty() or bool(os.environ.get("CURATE_NO_PROGRESS")))
        self.task = self.bar.add_task(desc, total=total)

    def __enter__(self):
        self.bar.start()
        return lambda n: self.bar.update(self.task, completed=n)

    def __exit__(self, *exc):
        self.bar.stop()


STAGE = VocabStage
