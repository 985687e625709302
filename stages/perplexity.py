"""perplexity: KenLM perplexity per document and CCNet's head/middle/tail buckets.

Two phases over the input shards, both maps through the phase engine:

1. **score**: each worker loads the models once and writes, per shard, every document's
   perplexity (NaN when its language has no model or it has no tokens) to ``_work/score``;
2. **bucket**: the driver computes per-language cut-offs at ``percentiles`` (CCNet: 30th
   and 60th) of the corpus's perplexities (leaving out ``cutoff_exclude_sources``, e.g. the
   reference source the model memorised, unless a language has nothing else); each worker writes ``ppl`` and ``ppl_bucket``
   (``head`` <= first cut-off < ``middle`` <= second cut-off < ``tail``) and splits its
   shard by ``keep_buckets`` into ``part-XXXXX.parquet`` and ``rejected/part-XXXXX.parquet``
   (same numbering as the input).

Models come from a ``train-lm`` stage of the same run (``models_from``) and/or from the
user (``model_paths``: language -> ARPA or binary KenLM file; these win). Reason codes:
``perplexity.<bucket>`` for a dropped bucket, ``perplexity.no_model`` /
``perplexity.empty`` for unscored documents when ``unscored: reject``.

The driver reads one float and the language per document to compute the cut-offs.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.config import PercentilePair, StageConfig
from curate.errors import ConfigError
from curate.manifest import shard_name
from curate.reasons import declare
from curate.schema import make_rejected
from curate.shardio import read_parquet, sha256_file, write_parquet
from curate.shards import sum_shards, write_shard
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters.kenlm_lm import Scorer
from stages.train_lm import load_models_index

REASONS = declare("perplexity", {
    "head": "perplexity in the head bucket (at or below the first per-language cut-off), a bucket not kept",
    "middle": "perplexity in the middle bucket (between the two per-language cut-offs), a bucket not kept",
    "tail": "perplexity in the tail bucket (above the second per-language cut-off), a bucket not kept",
    "no_model": "no KenLM model for the document's language (unscored: reject)",
    "empty": "the document has no tokens to score (unscored: reject)",
})


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
    percentiles: PercentilePair = (30.0, 60.0)
    cutoff_exclude_sources: list[str] = []
    exempt_sources: list[str] = []
    keep_buckets: list[Literal["head", "middle", "tail"]] = ["head", "middle", "tail"]
    unscored: Literal["keep", "reject"] = "keep"
    lang_column: str = "lang"
    default_lang: str | None = None


def _langs(table: pa.Table, cfg: PerplexityConfig) -> list[str | None]:
    if cfg.lang_column in table.column_names:
        return [x or cfg.default_lang for x in table.column(cfg.lang_column).to_pylist()]
    return [cfg.default_lang] * table.num_rows


class ScoreWorker:
    """Pass 1: perplexities of one shard (models load once per worker), written to a work
    file with each document's language and whether it counts toward the cut-offs."""

    def __init__(self, model_paths: dict[str, str], cfg: dict, work_dir: str):
        self.cfg = PerplexityConfig.model_validate(cfg)
        self.scorer = Scorer(model_paths, self.cfg.normalize)
        self.work = Path(work_dir)

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
        scores = pa.table({
            "ppl": pa.array(ppl, pa.float64()),
            "lang": pa.array(langs, pa.string()),
            "excluded": pa.array([s in excluded for s in table.column("source").to_pylist()], pa.bool_()),
        })
        info = write_parquet(scores, self.work / "score" / f"{shard_name(task['index'])}.parquet")
        return {"index": task["index"], "scored": int((~np.isnan(ppl)).sum()), "files": [info]}


def cutoffs_of(score_files: list[Path], percentiles: tuple[float, float]) -> tuple[dict, dict]:
    """Per-language cut-offs over the scored documents; a language whose documents all come
    from excluded sources falls back to those. Returns (cut-offs, documents used)."""
    by_lang: dict[str, list[np.ndarray]] = {}
    by_lang_excluded: dict[str, list[np.ndarray]] = {}
    for f in score_files:
        t = read_parquet(f)
        ppl = t.column("ppl").to_numpy(zero_copy_only=False)
        langs = np.array(t.column("lang").to_pylist(), dtype=object)
        excl = t.column("excluded").to_numpy(zero_copy_only=False)
        ok = ~np.isnan(ppl) & (langs != None)  # noqa: E711
        for lang in sorted(set(langs[ok].tolist())):
            sel = ok & (langs == lang)
            for target, mask in ((by_lang, sel & ~excl), (by_lang_excluded, sel & excl)):
                if mask.any():
                    target.setdefault(lang, []).append(ppl[mask])
    cutoffs: dict[str, list[float]] = {}
    docs: dict[str, int] = {}
    for lang in sorted(set(by_lang) | set(by_lang_excluded)):
        values = np.concatenate(by_lang.get(lang) or by_lang_excluded[lang])
        docs[lang] = int(values.size)
        cutoffs[lang] = [float(x) for x in np.percentile(values, list(percentiles))]
    return cutoffs, docs


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

    def __init__(self, out_dir: str, cfg: dict, model_langs: list[str], cutoffs: dict, work_dir: str):
        self.out_dir = Path(out_dir)
        self.work = Path(work_dir)
        self.cfg = PerplexityConfig.model_validate(cfg)
        self.model_langs = set(model_langs)
        self.cutoffs = {k: tuple(v) for k, v in cutoffs.items()}

    def __call__(self, task: dict) -> dict:
        cfg = self.cfg
        table = read_parquet(task["path"])
        langs = _langs(table, cfg)
        ppl = read_parquet(self.work / "score" / f"{shard_name(task['index'])}.parquet", columns=["ppl"])
        ppl = ppl.column("ppl").to_numpy(zero_copy_only=False)
        buckets = [bucket_of(p, self.cutoffs.get(lang)) if lang else None for p, lang in zip(ppl, langs)]
        keep, reasons = [], []
        exempt = set(cfg.exempt_sources)
        sources = table.column("source").to_pylist() if exempt else [None] * table.num_rows
        for p, lang, b, src in zip(ppl, langs, buckets, sources):
            if src in exempt:
                ok = True
            elif b is not None:
                ok = b in cfg.keep_buckets
                reason = REASONS[b]
            else:
                ok = cfg.unscored == "keep"
                reason = REASONS["empty" if lang in self.model_langs else "no_model"]
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
        rejected = make_rejected(dropped, PerplexityStage.name, reasons) if dropped.num_rows else None
        marker = write_shard(self.out_dir, task["index"], kept, rejected, table.num_rows,
                             where=f"stage perplexity shard {task['index']} ({task['path']})",
                             input_info={"path": task["path"]})
        marker["buckets"] = dict(Counter(b or "none" for b in buckets))
        return marker


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

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: PerplexityConfig = self.config  # type: ignore[assignment]
        models = self.model_paths(ctx.run_dir)
        cfg_json = cfg.model_dump(mode="json")
        work = str(ctx.work_dir)
        tasks = [{"index": i, "path": str(p)} for i, p in enumerate(ctx.input_shards)]
        model_key = {lang: sha256_file(p) for lang, p in sorted(models.items())}
        scored = ctx.phases.map("score", ScoreWorker, (models, cfg_json, work), tasks, key=model_key)
        cutoffs, cutoff_docs = cutoffs_of([ctx.phases.file(r["files"][0]) for r in scored], cfg.percentiles)
        init = (str(ctx.out_dir), cfg_json, sorted(models), cutoffs, work)
        results = ctx.phases.map("bucket", BucketWorker, init, tasks, key=cutoffs)
        body = sum_shards(results, f"stage {ctx.stage_name}")
        buckets: Counter = Counter()
        for r in results:
            buckets.update(r["buckets"])
        n_scored = sum(r["scored"] for r in scored)
        return GlobalResult.from_shards(
            body,
            extra={
                "models": {lang: {"path": p, "sha256": model_key[lang]} for lang, p in sorted(models.items())},
                "percentiles": list(cfg.percentiles),
                "cutoffs": cutoffs,
                "scored_docs": n_scored,
                "cutoff_docs_by_lang": cutoff_docs,
                "buckets": dict(sorted(buckets.items())),
            },
        )

    def stage_refs(self) -> list[str]:
        return [self.config.models_from] if self.config.models_from else []  # type: ignore[attr-defined]


STAGE = PerplexityStage
