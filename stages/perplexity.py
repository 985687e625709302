"""perplexity: KenLM perplexity per document and CCNet's head/middle/tail buckets.

Two passes over the input shards, both through ``ctx.executor.map``:

1. **score**: each worker loads the models once and returns, per shard, every document's
   perplexity (NaN when its language has no model or it has no tokens);
2. **bucket**: the driver computes per-language cut-offs at ``percentiles`` (CCNet: 30th
   and 60th) of the corpus's perplexities (leaving out ``cutoff_exclude_sources``, e.g. the
   reference source the model memorised, unless a language has nothing else); each worker writes ``ppl`` and ``ppl_bucket``
   (``head`` <= first cut-off < ``middle`` <= second cut-off < ``tail``) and splits its
   shard by ``keep_buckets`` into ``part-XXXXX.parquet`` and ``rejected/part-XXXXX.parquet``
   (same numbering as the input).

Models come from a ``train-lm`` stage of the same run (``models_from``) and/or from the
user (``model_paths``: language -> ARPA or binary KenLM file; these win). Reason codes:
``quality.ppl_<bucket>`` for a dropped bucket, ``quality.ppl_no_model`` /
``quality.ppl_empty`` for unscored documents when ``unscored: reject``.

The driver holds one float per document between the passes (8 bytes each).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import field_validator

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.manifest import check_conservation, shard_name
from curate.schema import make_rejected, rejected_schema
from curate.shardio import read_parquet, sha256_file, write_parquet
from curate.stage import GlobalContext, GlobalStage
from filters.kenlm_lm import Scorer
from stages.train_lm import load_models_index

BUCKETS = ("head", "middle", "tail")
REASON_PREFIX = "quality"


class PerplexityConfig(StageConfig):
    """Config of the perplexity stage.

    Attributes:
        models_from: name of a ``train-lm`` stage of this run whose models to use.
        model_paths: language -> KenLM model (ARPA or binary); relative paths resolve
            against the current directory; they override ``models_from`` per language.
        normalize: prepare text with :func:`filters.kenlm_lm.prepare_lines` before scoring
            (how ``train-lm`` prepares its text); False scores whitespace-collapsed lines.
        percentiles: the two per-language cut-offs between head/middle and middle/tail.
        cutoff_exclude_sources: documents of these sources are scored and bucketed but not
            used to compute the cut-offs (e.g. the reference source the model was trained
            on, whose perplexities are far below those of unseen text).
        keep_buckets: buckets whose documents are kept.
        exempt_sources: documents of these sources (e.g. code) are scored and bucketed but
            always kept, and left out of the cut-offs.
        unscored: keep or reject documents without a perplexity (no model for their
            language, or no tokens).
        lang_column: the language column.
        default_lang: language of documents whose language column is absent or null.
    """

    models_from: str | None = None
    model_paths: dict[str, str] = {}
    normalize: bool = True
    percentiles: tuple[float, float] = (30.0, 60.0)
    cutoff_exclude_sources: list[str] = []
    exempt_sources: list[str] = []
    keep_buckets: list[Literal["head", "middle", "tail"]] = ["head", "middle", "tail"]
    unscored: Literal["keep", "reject"] = "keep"
    lang_column: str = "lang"
    default_lang: str | None = None

    @field_validator("percentiles")
    @classmethod
    def _increasing(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError("percentiles must be two increasing numbers in [0, 100]")
        return v


def _langs(table: pa.Table, cfg: PerplexityConfig) -> list[str | None]:
    if cfg.lang_column in table.column_names:
        return [x or cfg.default_lang for x in table.column(cfg.lang_column).to_pylist()]
    return [cfg.default_lang] * table.num_rows


class ScoreWorker:
    """Pass 1: perplexities of one shard (models load once per worker)."""

    def __init__(self, model_paths: dict[str, str], cfg: dict):
        self.cfg = PerplexityConfig.model_validate(cfg)
        self.scorer = Scorer(model_paths, self.cfg.normalize)

    def __call__(self, task: dict) -> dict:
        lang_col = self.cfg.lang_column
        cols = ["text", "source"] + ([lang_col] if lang_col in pq.read_schema(task["path"]).names else [])
        table = read_parquet(task["path"], columns=cols)
        langs = _langs(table, self.cfg)
        texts = table.column("text").to_pylist()
        ppl = np.full(len(texts), np.nan)
        for i, (text, lang) in enumerate(zip(texts, langs)):
            p = self.scorer.perplexity(text, lang)
            if p is not None:
                ppl[i] = p
        excluded = set(self.cfg.cutoff_exclude_sources) | set(self.cfg.exempt_sources)
        by_lang: dict[str, list[float]] = {}
        by_lang_excluded: dict[str, list[float]] = {}
        for lang, src, p in zip(langs, table.column("source").to_pylist(), ppl):
            if lang is not None and not math.isnan(p):
                (by_lang_excluded if src in excluded else by_lang).setdefault(lang, []).append(float(p))
        return {
            "index": task["index"],
            "ppl": ppl,
            "by_lang": {k: np.array(v) for k, v in by_lang.items()},
            "by_lang_excluded": {k: np.array(v) for k, v in by_lang_excluded.items()},
        }


def bucket_of(ppl: float, cuts: tuple[float, float] | None) -> str | None:
    """``head``/``middle``/``tail`` of a perplexity given a language's two cut-offs."""
    if cuts is None or math.isnan(ppl):
        return None
    if ppl <= cuts[0]:
        return "head"
    if ppl <= cuts[1]:
        return "middle"
    return "tail"


class BucketWorker:
    """Pass 2: add ``ppl``/``ppl_bucket`` to one shard and split it into kept and rejected."""

    def __init__(self, out_dir: str, cfg: dict, model_langs: list[str], cutoffs: dict):
        self.out_dir = Path(out_dir)
        self.cfg = PerplexityConfig.model_validate(cfg)
        self.model_langs = set(model_langs)
        self.cutoffs = {k: tuple(v) for k, v in cutoffs.items()}

    def __call__(self, task: dict) -> dict:
        cfg = self.cfg
        table = read_parquet(task["path"])
        langs = _langs(table, cfg)
        ppl = task["ppl"]
        buckets = [bucket_of(p, self.cutoffs.get(lang)) if lang else None for p, lang in zip(ppl, langs)]
        keep, reasons = [], []
        exempt = set(cfg.exempt_sources)
        sources = table.column("source").to_pylist() if exempt else [None] * table.num_rows
        for p, lang, b, src in zip(ppl, langs, buckets, sources):
            if src in exempt:
                ok = True
            elif b is not None:
                ok = b in cfg.keep_buckets
                reason = f"{REASON_PREFIX}.ppl_{b}"
            else:
                ok = cfg.unscored == "keep"
                reason = f"{REASON_PREFIX}.ppl_" + ("empty" if lang in self.model_langs else "no_model")
            keep.append(ok)
            if not ok:
                reasons.append(reason)
        for name, col in (
            ("ppl", pa.array(ppl, pa.float64(), mask=np.isnan(ppl))),
            ("ppl_bucket", pa.array(buckets, pa.string())),
        ):
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, col)
        mask = pa.array(keep, pa.bool_())
        kept = table.filter(mask)
        dropped = table.filter(pc.invert(mask))
        rejected = (
            make_rejected(dropped, PerplexityStage.name, reasons)
            if dropped.num_rows
            else rejected_schema(table.schema).empty_table()
        )
        check_conservation(table.num_rows, kept.num_rows, rejected.num_rows, f"perplexity shard {task['index']}")
        name = shard_name(task["index"])
        return {
            "index": task["index"],
            "input": table.num_rows,
            "kept": kept.num_rows,
            "rejected": rejected.num_rows,
            "reasons": dict(Counter(reasons)),
            "buckets": dict(Counter(b or "none" for b in buckets)),
            "outputs": write_parquet(kept, self.out_dir / f"{name}.parquet"),
            "rejected_outputs": write_parquet(rejected, self.out_dir / "rejected" / f"{name}.parquet"),
        }


class PerplexityStage(GlobalStage):
    name = "perplexity"
    version = "1"
    Config = PerplexityConfig

    def model_paths(self, run_dir: Path) -> dict[str, str]:
        """Language -> model file, from ``models_from`` and ``model_paths``."""
        cfg: PerplexityConfig = self.config  # type: ignore[assignment]
        paths: dict[str, str] = {}
        if cfg.models_from:
            paths.update(load_models_index(run_dir, cfg.models_from))
        for lang, p in cfg.model_paths.items():
            if not Path(p).is_file():
                raise ConfigError(f"stage {self.stage_name!r}: model_paths.{lang}: no file {p}")
            paths[lang] = str(Path(p).resolve())
        if not paths:
            raise ConfigError(f"stage {self.stage_name!r}: set models_from (a train-lm stage) or model_paths")
        return paths

    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        """The models scored with: a retrained model makes a finished stage stale."""
        from curate.shardio import sha256_file

        return [(f"model:{lang}", sha256_file(p)) for lang, p in sorted(self.model_paths(run_dir).items())]

    def run(self, ctx: GlobalContext) -> dict:
        cfg: PerplexityConfig = self.config  # type: ignore[assignment]
        models = self.model_paths(ctx.run_dir)
        cfg_json = cfg.model_dump(mode="json")
        tasks = [{"index": i, "path": str(p)} for i, p in enumerate(ctx.input_shards)]

        t0 = time.perf_counter()
        ppl: dict[int, np.ndarray] = {}
        by_lang: dict[str, list[np.ndarray]] = {}
        by_lang_excluded: dict[str, list[np.ndarray]] = {}
        for _, res in ctx.executor.map(ScoreWorker, (models, cfg_json), tasks, desc=f"{ctx.stage_name}: score"):
            ppl[res["index"]] = res["ppl"]
            for lang, arr in res["by_lang"].items():
                by_lang.setdefault(lang, []).append(arr)
            for lang, arr in res["by_lang_excluded"].items():
                by_lang_excluded.setdefault(lang, []).append(arr)
        t_score = time.perf_counter() - t0

        # Per-language cut-offs; a language whose documents all come from excluded sources
        # falls back to those.
        cutoffs: dict[str, list[float]] = {}
        cutoff_docs: dict[str, int] = {}
        for lang in sorted(set(by_lang) | set(by_lang_excluded)):
            values = np.concatenate(by_lang.get(lang) or by_lang_excluded[lang])
            cutoff_docs[lang] = int(values.size)
            cutoffs[lang] = [float(x) for x in np.percentile(values, list(cfg.percentiles))]

        t1 = time.perf_counter()
        init = (str(ctx.out_dir), cfg_json, sorted(models), cutoffs)
        tasks2 = [dict(t, ppl=ppl[t["index"]]) for t in tasks]
        results = sorted(
            (r for _, r in ctx.executor.map(BucketWorker, init, tasks2, desc=f"{ctx.stage_name}: bucket")),
            key=lambda r: r["index"],
        )
        t_bucket = time.perf_counter() - t1

        reasons: Counter = Counter()
        buckets: Counter = Counter()
        for r in results:
            reasons.update(r["reasons"])
            buckets.update(r["buckets"])
        n_in = sum(r["input"] for r in results)
        n_scored = int(sum(int((~np.isnan(a)).sum()) for a in ppl.values()))
        return {
            "input_rows": n_in,
            "kept_rows": sum(r["kept"] for r in results),
            "rejected_rows": sum(r["rejected"] for r in results),
            "reasons": dict(sorted(reasons.items())),
            "models": {lang: {"path": p, "sha256": sha256_file(p)} for lang, p in sorted(models.items())},
            "percentiles": list(cfg.percentiles),
            "cutoffs": cutoffs,
            "scored_docs": n_scored,
            "cutoff_docs_by_lang": cutoff_docs,
            "buckets": dict(sorted(buckets.items())),
            "shards": [{"index": r["index"], "input": r["input"], "kept": r["kept"], "rejected": r["rejected"]} for r in results],
            "outputs": [r["outputs"] for r in results],
            "rejected_outputs": [r["rejected_outputs"] for r in results],
            "timings": {
                "score_seconds": round(t_score, 3),
                "bucket_seconds": round(t_bucket, 3),
                "scored_docs_per_s": round(n_scored / max(t_score, 1e-9), 2),
            },
        }


STAGE = PerplexityStage
