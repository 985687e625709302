"""sft-select: perplexity scores per example and per-task percentile selection (scores are
columns, drops are reasons).

Phases (:mod:`curate.phases`):

1. ``score`` (one task per input shard): the KenLM perplexity (:class:`filters.kenlm_lm.Scorer`,
   CCNet's per-document formula) of each example's assistant turns (``score_text: response``)
   or of all its turns (``conversation``), under the model of its ``lang``; written to
   ``_work/score-NNNNN.parquet``.
2. ``cutoffs`` (driver): per task, the perplexities at ``percentiles`` (low, high) of the
   task's scored examples. Tasks with fewer than ``min_task_examples`` scored examples get no
   cut-offs (their tails are too noisy to cut).
3. ``filter`` (one task per input shard): adds ``ppl`` (null when unscored) and writes the shard
   through :func:`curate.shards.write_shard`: ``sft-select.ppl_low`` below the low cut-off (too
   simple or repetitive), ``sft-select.ppl_high`` above the high one (too complex, garbled or
   off-language), ``sft-select.ppl_unscored`` for examples without a model when
   ``unscored: reject``.

With ``ifd`` set (a checkpoint of the project's trainer and the tokenizer it was trained
with), the ``score`` phase also computes the instruction-following difficulty of Li et al.
(2023, "Cherry LLM"): the model's mean cross-entropy on the response tokens given the prompt
divided by that on the response alone (both after one end-of-text token), as the ``ifd`` column
(null when the response has no tokens). Near or above 1, the prompt does not help the model
produce the response. It is a column only; no example is dropped by it.

Models: ``models_from`` names a ``train-lm`` stage of this run, or is the path of a finished
``train-lm`` stage directory of another run (``runs/demo/train-lm``); ``model_paths`` (language
-> KenLM file) add or override languages. The models' checksums count toward resume.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.config import PercentilePair, StageConfig
from curate.errors import ConfigError
from curate.reasons import declare
from curate.schema import make_rejected
from curate.shardio import read_parquet, sha256_file, write_parquet
from curate.shards import sum_shards, write_shard
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters.kenlm_lm import Scorer
from filters.sft_formats import prompt_text, response_text
from stages.train_lm import load_models_index

REASONS = declare("sft-select", {
    "ppl_low": "perplexity below the task's low percentile cut-off (too simple or repetitive)",
    "ppl_high": "perplexity above the task's high percentile cut-off (too complex, garbled or off-language)",
    "ppl_unscored": "no perplexity (no model for the language, or no tokens) and unscored: reject",
})


class IfdSettings(StageConfig):
    """Instruction-following difficulty with a trainer checkpoint.

    Attributes:
        checkpoint: a ``trainer`` checkpoint (``trainer.model.load_checkpoint``).
        tokenizer: the ``tokenizer.json`` the checkpoint was trained with.
        eos_token: the token put before the prompt (and before the bare response).
        max_response_tokens: responses are cut to this many tokens; prompts keep their last
            tokens that fit the model's context.
        device: torch device.
        threads: torch threads per worker (workers already run in parallel; more threads per
            worker mostly contend for the same cores).
    """

    checkpoint: str
    tokenizer: str
    eos_token: str = "<|endoftext|>"
    max_response_tokens: int = Field(default=256, gt=0)
    device: str = "cpu"
    threads: int = Field(default=1, ge=1)


class SftSelectConfig(StageConfig):
    """Config of the sft-select stage.

    Attributes:
        models_from: a ``train-lm`` stage of this run, or the path of a train-lm stage directory.
        model_paths: language -> KenLM model (ARPA or binary); they override ``models_from``.
        score_text: ``response`` (assistant turns) or ``conversation`` (every turn).
        percentiles: (low, high) per-task cut-offs; examples strictly outside are dropped.
        min_task_examples: tasks with fewer scored examples are not cut.
        exempt_tasks: tasks scored but never cut.
        unscored: keep or reject examples without a perplexity.
        default_lang: language of examples whose ``lang`` is null.
        ifd: optional :class:`IfdSettings` (adds the ``ifd`` column).
    """

    models_from: str | None = None
    model_paths: dict[str, str] = {}
    score_text: Literal["response", "conversation"] = "response"
    percentiles: PercentilePair = (5.0, 95.0)
    min_task_examples: int = Field(default=20, ge=1)
    exempt_tasks: tuple[str, ...] = ()
    unscored: Literal["keep", "reject"] = "keep"
    default_lang: str | None = None
    ifd: IfdSettings | None = None


def _text_of(msgs: list[dict], how: str) -> str:
    if how == "response":
        return response_text(msgs)
    return "\n\n".join(m["content"] for m in msgs if m.get("content"))


class IfdScorer:
    """Instruction-following difficulty (see the module docstring) with a trainer checkpoint."""

    def __init__(self, settings: IfdSettings):
        try:
            import torch
            from trainer.model import load_checkpoint
        except ImportError as e:
            raise ConfigError(f"sft-select: ifd needs the trainer's dependencies (pip install -e '.[train]'): {e}") from None
        from tokenizers import Tokenizer

        self.torch = torch
        torch.set_num_threads(settings.threads)
        self.model, self.mcfg = load_checkpoint(settings.checkpoint, settings.device)
        self.tok = Tokenizer.from_file(settings.tokenizer)
        self.eos = self.tok.token_to_id(settings.eos_token)
        if self.eos is None:
            raise ConfigError(f"sft-select: ifd.tokenizer has no token {settings.eos_token!r}")
        if self.tok.get_vocab_size() > self.mcfg.vocab_size:
            raise ConfigError(f"sft-select: ifd.tokenizer has {self.tok.get_vocab_size()} ids, the checkpoint "
                              f"{self.mcfg.vocab_size}: not the tokenizer it was trained with")
        self.max_resp = settings.max_response_tokens
        self.device = settings.device

    def _loss(self, ids: list[int], n_target: int) -> float:
        """Mean cross-entropy of the last ``n_target`` tokens of ``ids`` given the ones before."""
        torch = self.torch
        x = torch.tensor([ids[:-1]], device=self.device)
        y = torch.tensor(ids[1:][-n_target:], device=self.device)
        with torch.no_grad():
            logits = self.model(x)[0, -n_target:].float()
        return float(torch.nn.functional.cross_entropy(logits, y))

    def score(self, prompt: str, response: str) -> float:
        r = self.tok.encode(response, add_special_tokens=False).ids[: min(self.max_resp, self.mcfg.block_size - 1)]
        if not r:
            return math.nan
        p = self.tok.encode(prompt, add_special_tokens=False).ids
        room = self.mcfg.block_size + 1 - len(r) - 1
        p = p[-room:] if room > 0 else []
        cond = self._loss([self.eos] + p + r, len(r))
        alone = self._loss([self.eos] + r, len(r))
        return cond / alone if alone > 0 else math.nan


class ScoreWorker:
    """Phase ``score``: perplexities of one shard into ``_work/score-NNNNN.parquet``."""

    def __init__(self, model_paths: dict[str, str], cfg: dict, work_dir: str):
        self.cfg = SftSelectConfig.model_validate(cfg)
        self.scorer = Scorer(model_paths)
        self.ifd = IfdScorer(self.cfg.ifd) if self.cfg.ifd is not None else None
        self.work = Path(work_dir)

    def __call__(self, task: dict) -> dict:
        t = read_parquet(task["path"], columns=["task", "lang", "messages"])
        ppl, ifd = [], []
        for msgs, lang in zip(t.column("messages").to_pylist(), t.column("lang").to_pylist()):
            p = self.scorer.perplexity(_text_of(msgs, self.cfg.score_text), lang or self.cfg.default_lang)
            ppl.append(math.nan if p is None else p)
            if self.ifd is not None:
                ifd.append(self.ifd.score(prompt_text(msgs), response_text(msgs)))
        arr = np.asarray(ppl, np.float64)
        cols = {"task": t.column("task"), "ppl": pa.array(arr, pa.float64(), mask=np.isnan(arr))}
        if self.ifd is not None:
            a = np.asarray(ifd, np.float64)
            cols["ifd"] = pa.array(a, pa.float64(), mask=np.isnan(a))
        out = pa.table(cols)
        info = write_parquet(out, self.work / f"score-{task['index']:05d}.parquet")
        return {"index": task["index"], "rows": t.num_rows, "scored": int((~np.isnan(arr)).sum()), "files": [info]}


class FilterWorker:
    """Phase ``filter``: add ``ppl``, split by the cut-offs, write the shard."""

    def __init__(self, out_dir: str, cfg: dict, cutoffs: dict):
        self.out = Path(out_dir)
        self.cfg = SftSelectConfig.model_validate(cfg)
        self.cutoffs = cutoffs

    def __call__(self, task: dict) -> dict:
        table = read_parquet(task["path"])
        scores = read_parquet(task["scores"])
        ppl = scores.column("ppl")
        for name in [c for c in scores.column_names if c != "task"]:
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, scores.column(name))
        reasons: list[str | None] = []
        exempt = set(self.cfg.exempt_tasks)
        for tk, p in zip(table.column("task").to_pylist(), ppl.to_pylist()):
            cut = self.cutoffs.get(tk)
            if p is None:
                reasons.append(REASONS["ppl_unscored"] if self.cfg.unscored == "reject" else None)
            elif cut is None or tk in exempt:
                reasons.append(None)
            elif p < cut[0]:
                reasons.append(REASONS["ppl_low"])
            elif p > cut[1]:
                reasons.append(REASONS["ppl_high"])
            else:
                reasons.append(None)
        keep = pa.array([r is None for r in reasons], pa.bool_())
        details = [None if r is None or self.cutoffs.get(tk) is None else
                   f"ppl {p:.1f} outside [{self.cutoffs[tk][0]:.1f}, {self.cutoffs[tk][1]:.1f}]"
                   for r, tk, p in zip(reasons, table.column("task").to_pylist(), ppl.to_pylist())]
        rejected = make_rejected(table.filter(pc.invert(keep)), "sft-select", [r for r in reasons if r],
                                 [d for r, d in zip(reasons, details) if r])
        return write_shard(self.out, task["index"], table.filter(keep), rejected, table.num_rows,
                           where=f"sft-select shard {task['index']}", input_info={"path": task["path"]})


class SftSelect(GlobalStage):
    name = "sft-select"
    version = "1"
    Config = SftSelectConfig

    def stage_refs(self) -> list[str]:
        m = self.config.models_from  # type: ignore[attr-defined]
        return [m] if m and "/" not in m else []

    def model_paths(self, run_dir: Path) -> dict[str, str]:
        cfg: SftSelectConfig = self.config  # type: ignore[assignment]
        paths: dict[str, str] = {}
        if cfg.models_from:
            if "/" in cfg.models_from:
                d = Path(cfg.models_from)
                paths.update(load_models_index(d.parent, d.name))
            else:
                paths.update(load_models_index(run_dir, cfg.models_from))
        for lang, p in cfg.model_paths.items():
            if not Path(p).is_file():
                raise ConfigError(f"stage {self.stage_name!r}: model_paths.{lang}: no file {p}")
            paths[lang] = str(Path(p).resolve())
        if not paths:
            raise ConfigError(f"stage {self.stage_name!r}: set models_from (a train-lm stage) or model_paths")
        return {k: str(Path(v).resolve()) for k, v in paths.items()}

    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        out = [(f"model:{lang}", sha256_file(p)) for lang, p in sorted(self.model_paths(run_dir).items())]
        ifd = self.config.ifd  # type: ignore[attr-defined]
        if ifd is not None:
            for key in ("checkpoint", "tokenizer"):
                p = getattr(ifd, key)
                if not Path(p).is_file():
                    raise ConfigError(f"stage {self.stage_name!r}: ifd.{key}: no file {p}")
                out.append((f"ifd:{key}", sha256_file(p)))
        return out

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: SftSelectConfig = self.config  # type: ignore[assignment]
        models = self.model_paths(ctx.run_dir)
        cfg_json = cfg.model_dump(mode="json")
        if cfg.ifd is not None:  # workers may run in another directory
            cfg_json["ifd"].update(checkpoint=str(Path(cfg.ifd.checkpoint).resolve()),
                                   tokenizer=str(Path(cfg.ifd.tokenizer).resolve()))
        work = ctx.work_dir
        tasks = [{"index": i, "path": str(Path(p).resolve())} for i, p in enumerate(ctx.input_shards)]
        scored = ctx.phases.map("score", ScoreWorker, (models, cfg_json, str(work.resolve())), tasks,
                                desc=f"{ctx.stage_name}: score")
        score_files = [str(ctx.phases.file(r["files"][0])) for r in scored]

        def cutoffs() -> dict:
            by_task: dict[str, list[np.ndarray]] = {}
            for f in score_files:
                t = read_parquet(f)
                ppl = t.column("ppl").to_numpy(zero_copy_only=False).astype(np.float64)
                tk = np.asarray(t.column("task").to_pylist(), dtype=object)
                for name in sorted(set(tk.tolist())):
                    v = ppl[(tk == name) & ~np.isnan(ppl)]
                    by_task.setdefault(name, []).append(v)
            out, dist = {}, {}
            for name in sorted(by_task):
                v = np.concatenate(by_task[name])
                q = [float(x) for x in np.percentile(v, [0, 10, 25, 50, 75, 90, 100])] if v.size else []
                dist[name] = {"scored": int(v.size), "quantiles": dict(zip(("min", "p10", "p25", "p50", "p75", "p90", "max"), q))}
                if v.size >= cfg.min_task_examples and name not in cfg.exempt_tasks:
                    out[name] = [float(x) for x in np.percentile(v, list(cfg.percentiles))]
            return {"cutoffs": out, "distribution": dist}

        cut = ctx.phases.step("cutoffs", cutoffs)
        ftasks = [dict(t, scores=f) for t, f in zip(tasks, score_files)]
        markers = ctx.phases.map("filter", FilterWorker, (str(ctx.out_dir.resolve()), cfg_json, cut["cutoffs"]),
                                 ftasks, desc=f"{ctx.stage_name}: filter")
        body = sum_shards(markers, f"stage {ctx.stage_name}")
        return GlobalResult(
            input_rows=body["input_rows"], kept_rows=body["kept_rows"], rejected_rows=body["rejected_rows"],
            reasons=body["reasons"], outputs=body["outputs"], rejected_outputs=body["rejected_outputs"],
            shards=body["shards"],
            extra={"models": {k: {"path": p, "sha256": sha256_file(p)} for k, p in sorted(models.items())},
                   "percentiles": list(cfg.percentiles), "cutoffs": cut["cutoffs"],
                   "ppl_distribution": cut["distribution"],
                   "scored": sum(r["scored"] for r in scored)},
        )


STAGE = SftSelect
