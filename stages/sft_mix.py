"""sft-mix: examples-proportional mixing of SFT tasks, chat-template rendering, loss masks and
packing into the ``curate-sft/1`` token shards the trainer reads.

Phases (:mod:`curate.phases`):

1. ``tokenizer`` (driver): the base ``tokenizer.json`` (``tokenizer.path``, else the pretraining
   mix stage's own when ``pretrain`` is set, else a byte-level BPE trained on the examples'
   text) with the template's special tokens (``<|im_start|>`` ...) appended as special tokens
   (new ids after the base vocabulary, so base ids and the mix's token files stay valid);
   written to ``tokenizer.json`` in the stage folder.
2. ``encode`` (one task per input shard): render every example with the chat template and
   tokenise it with its loss mask (:class:`filters.chat_template.Encoder`); token, mask and
   index arrays go to ``_work/``. An example longer than ``context_length`` tokens is rejected
   (``sft-mix.too_long``) or, with ``overlong: truncate``, shortened by the documented rule:
   whole leading exchanges are dropped (the system turn stays) until it fits, and it is
   rejected if even its last exchange does not fit; no example is ever split. A template that
   raises on an example rejects it (``sft-mix.template_error``). Each example goes to the
   validation split when ``xxh3_64(id)`` falls below ``val_fraction`` (seed-independent).
3. ``plan`` (driver): examples-proportional mixing with a cap (T5/FLAN): task ``t`` with ``n_t``
   train examples has the effective weight ``weight_t * min(n_t, cap_t)``; the budget (train
   examples; ``epoch`` = the sum of ``min(n_t, cap_t)``, ``max`` = the largest the weights reach
   within each task's ``max_epochs``) is split by :func:`filters.mixplan.plan` (largest
   remainders). A task whose share needs more than ``max_epochs`` passes is a feasibility
   error naming it. With ``pretrain``, chunks of ``chunk_tokens`` tokens of the mix stage's
   train token files make up ``share`` of all train examples (OPT-IML style); too few chunks
   is an error naming ``pretrain``. Shares are shares of train examples.
4. ``pack`` (driver): a task drawn ``m = full * n + partial`` times gives every train example
   ``full`` copies plus one more to the ``partial`` examples first in the order of
   ``xxh64(id, seed)``. All copies (and pretraining chunks) are ordered by a seeded hash, then
   packed first-fit (at most ``open_bins`` open sequences) into sequences of at most
   ``context_length`` tokens, written back to back: ``train-NNNNN.bin`` (tokens),
   ``.mask.bin`` (uint8), ``.idx`` (int64 example starts + final length), a file holding at most
   ``shard_tokens`` tokens and only whole sequences; the same for ``val-NNNNN.*``; then
   ``meta.json`` (``curate-sft/1``).
5. ``shards`` (one task per input shard): ``part-NNNNN.parquet`` holds the examples of the
   mixture (train examples drawn at least once, with ``copies``, and validation examples),
   ``rejected/`` the rest: ``sft-mix.too_long``, ``sft-mix.template_error`` and
   ``sft-mix.not_sampled`` (left out by the cap or budget), so input = kept + rejected.
   ``curate export RUN <stage> --format messages`` writes the mixture as chat JSONL.

Masks: 1 exactly on every assistant turn's content, the tool calls it makes and its end-of-turn
token (``last_turn_only``: the last assistant turn only); pretraining chunks are all 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field, field_validator, model_validator
from tokenizers import Tokenizer

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.reasons import declare
from curate.schema import make_rejected
from curate.shardio import atomic_write_bytes, atomic_write_json, file_info, read_parquet, sha256_file
from curate.shards import sum_shards, write_shard
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters import bpe
from filters.chat_template import Encoder, TemplateRenderError, add_special_tokens, load_template, template_messages
from filters.minhash import fmix64
from filters.mixplan import InfeasibleMixError, SourceSupply, capacity, max_budget, plan, split_budget
from stages.mix import order_key, val_hash

FORMAT = "curate-sft/1"
REASONS = declare("sft-mix", {
    "too_long": "the rendered example has more tokens than context_length (and truncation could not fit it)",
    "template_error": "the chat template raised an error on the example (e.g. roles it does not accept)",
    "not_sampled": "a valid example left out of the mixture by its task's cap or the budget",
})
IDX = np.dtype([("row", "<i8"), ("task", "<i4"), ("status", "u1"), ("val", "u1"), ("off", "<i8"),
                ("len", "<i8"), ("target", "<i8"), ("key", "<u8"), ("trunc", "<i4")])
OK, TOO_LONG, TEMPLATE_ERROR = 0, 1, 2
_GOLD = 0x9E3779B97F4A7C15  # separates the order keys of an example's copies


# ----------------------------------------------------------------------------- config


class TemplateChoice(StageConfig):
    """The chat template: a built-in ``name``, a Jinja file ``path`` or a ``tokenizer_config``
    (``tokenizer_config.json`` with a ``chat_template``); see :func:`filters.chat_template.load_template`."""

    name: str | None = None
    path: str | None = None
    tokenizer_config: str | None = None
    end_of_turn: str | None = None
    special_tokens: tuple[str, ...] | None = None
    variables: dict[str, str] = {}
    date: str = "2024-01-01"

    @model_validator(mode="after")
    def _one(self) -> TemplateChoice:
        if sum(x is not None for x in (self.name, self.path, self.tokenizer_config)) != 1:
            raise ValueError("give exactly one of name, path, tokenizer_config")
        return self

    def load(self):
        return load_template(self.name, self.path, self.tokenizer_config, self.end_of_turn, self.special_tokens,
                             self.variables, self.date)


class SftTokenizer(StageConfig):
    """The base tokenizer: ``path`` (a ``tokenizer.json``), else the pretraining mix's own, else
    a byte-level BPE of ``vocab_size`` trained on up to ``sample_examples`` examples."""

    path: str | None = None
    vocab_size: int = Field(default=8192, ge=260)
    sample_examples: int = Field(default=20000, gt=0)
    eos_token: str = bpe.DEFAULT_EOS


class TaskSpec(StageConfig):
    """Mixing settings of one task: ``weight`` (relative), ``cap`` (overrides the stage's),
    ``max_epochs`` (upsampling limit)."""

    weight: float = Field(default=1.0, ge=0)
    cap: int | None = Field(default=None, gt=0)
    max_epochs: float | None = Field(default=None, gt=0)


class PretrainShare(StageConfig):
    """A share of pretraining text: ``mix`` is a mix stage of this run or the path of a mix stage
    directory; ``share`` of all train examples are chunks of ``chunk_tokens`` tokens
    (default: ``context_length``) of its train token files."""

    mix: str
    share: float = Field(gt=0, lt=1)
    chunk_tokens: int | None = Field(default=None, gt=0)


class SftMixConfig(StageConfig):
    """Config of the sft-mix stage (see the module docstring).

    Attributes:
        template: the chat template (:class:`TemplateChoice`).
        tokenizer: the base tokenizer (:class:`SftTokenizer`).
        last_turn_only: mask only the last assistant turn.
        context_length: most tokens of an example and of a packed sequence.
        overlong: ``reject`` or ``truncate`` examples longer than ``context_length``.
        cap: examples-proportional cap K per task (None: no cap).
        tasks: per-task settings; tasks not listed get the defaults.
        max_epochs: default upsampling limit of a task.
        budget: train examples in the mixture: a number, ``epoch`` or ``max``.
        val_fraction: share of each task held out (by a stable hash of the id).
        seed: seeds the sampling and the packing order.
        pretrain: optional share of pretraining text (:class:`PretrainShare`).
        shard_tokens: most tokens per ``.bin`` file.
        open_bins: sequences open at once while packing first-fit.
        batch_examples: examples rendered and tokenised per batch.
    """

    template: TemplateChoice = TemplateChoice(name="chatml")
    tokenizer: SftTokenizer = SftTokenizer()
    last_turn_only: bool = False
    context_length: int = Field(default=2048, gt=1)
    overlong: Literal["reject", "truncate"] = "reject"
    cap: int | None = Field(default=None, gt=0)
    tasks: dict[str, TaskSpec] = {}
    max_epochs: float = Field(default=1.0, gt=0)
    budget: int | Literal["epoch", "max"] = "epoch"
    val_fraction: float = Field(default=0.02, ge=0, lt=0.5)
    seed: int = Field(default=0, ge=0, lt=1 << 63)
    pretrain: PretrainShare | None = None
    shard_tokens: int = Field(default=1 << 28, gt=0)
    open_bins: int = Field(default=16, gt=0)
    batch_examples: int = Field(default=256, gt=0)

    @field_validator("budget")
    @classmethod
    def _budget(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("budget must be positive, 'epoch' or 'max'")
        return v


# ----------------------------------------------------------------------------- encode


def _truncations(msgs: list[dict]) -> list[tuple[int, list[dict]]]:
    """Shorter versions of a conversation: leading exchanges dropped, the system turn kept.

    Returns ``(turns dropped, messages)`` for every later user turn that can start the kept part.
    """
    head = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(head):]
    return [(j, head + body[j:]) for j in range(1, len(body)) if body[j]["role"] == "user"]


class EncodeWorker:
    """Phase ``encode``: render + tokenise one shard into ``_work/{tok,mask,idx}-NNNNN``."""

    def __init__(self, tokenizer_file: str, cfg: dict, work_dir: str, tasks: list[str]):
        self.cfg = SftMixConfig.model_validate(cfg)
        self.tok = Tokenizer.from_file(tokenizer_file)
        self.dtype = bpe.token_dtype(self.tok.get_vocab_size())
        self.enc = Encoder(self.cfg.template.load(), self.tok, self.dtype, self.cfg.last_turn_only)
        self.work = Path(work_dir)
        self.task_ids = {t: k for k, t in enumerate(tasks)}

    def _encode_one(self, msgs, tools):
        """(Encoded or None, status, detail, turns dropped)."""
        try:
            e = self.enc.encode(msgs, tools)
        except TemplateRenderError as err:
            return None, TEMPLATE_ERROR, str(err), 0
        if len(e.ids) <= self.cfg.context_length:
            return e, OK, None, 0
        if self.cfg.overlong == "truncate":
            for dropped, shorter in _truncations(msgs):
                try:
                    e2 = self.enc.encode(shorter, tools)
                except TemplateRenderError:
                    continue
                if len(e2.ids) <= self.cfg.context_length:
                    return e2, OK, None, dropped
        return None, TOO_LONG, f"{len(e.ids)} tokens > context_length {self.cfg.context_length}", 0

    def __call__(self, task: dict) -> dict:
        i = task["index"]
        t = read_parquet(task["path"], columns=["id", "task", "messages", "tools"])
        ids = t.column("id").to_pylist()
        tasks = t.column("task").to_pylist()
        tools = [json.loads(x) if x else None for x in t.column("tools").to_pylist()]
        convs = [template_messages(m) for m in t.column("messages").to_pylist()]
        n = t.num_rows
        idx = np.zeros(n, IDX)
        idx["row"] = np.arange(n)
        idx["task"] = [self.task_ids[x] for x in tasks]
        frac = int(self.cfg.val_fraction * (1 << 53))
        idx["val"] = [(val_hash(x) >> 11) < frac for x in ids]
        idx["key"] = [order_key(x, self.cfg.seed) for x in ids]
        rejects = []
        tok_chunks, mask_chunks = [], []
        off = 0
        bs = self.cfg.batch_examples
        for b in range(0, n, bs):
            pieces, where = [], []
            for r in range(b, min(n, b + bs)):
                try:
                    pieces.append(self.enc.pieces(convs[r], tools[r]))
                    where.append(r)
                except TemplateRenderError as err:
                    idx["status"][r] = TEMPLATE_ERROR
                    rejects.append([r, REASONS["template_error"], str(err)])
            for r, e in zip(where, self.enc.encode_pieces(pieces)):
                dropped = 0
                if len(e.ids) > self.cfg.context_length:
                    e, status, detail, dropped = self._encode_one(convs[r], tools[r])
                    if e is None:
                        idx["status"][r] = status
                        rejects.append([r, REASONS["too_long" if status == TOO_LONG else "template_error"], detail])
                        continue
                tok_chunks.append(e.ids)
                mask_chunks.append(e.mask)
                idx["off"][r], idx["len"][r] = off, len(e.ids)
                idx["target"][r], idx["trunc"][r] = int(e.mask.sum()), dropped
                off += len(e.ids)
        toks = np.concatenate(tok_chunks) if tok_chunks else np.empty(0, self.dtype)
        masks = np.concatenate(mask_chunks) if mask_chunks else np.empty(0, np.uint8)
        files = []
        for name, arr in (("tok", toks), ("mask", masks)):
            p = self.work / f"{name}-{i:05d}.bin"
            atomic_write_bytes(p, arr.tobytes())
            files.append(file_info(p))
        p = self.work / f"idx-{i:05d}.bin"
        atomic_write_bytes(p, idx.tobytes())
        files.append(file_info(p))
        ok = idx["status"] == OK
        per_task = {}
        for name, k in self.task_ids.items():
            m = ok & (idx["task"] == k)
            if m.any():
                per_task[name] = {"train": int((m & (idx["val"] == 0)).sum()), "val": int((m & (idx["val"] == 1)).sum()),
                                  "tokens": int(idx["len"][m].sum()), "target_tokens": int(idx["target"][m].sum())}
        return {"index": i, "rows": n, "rejects": rejects, "tasks": per_task, "files": files}


# ----------------------------------------------------------------------------- plan


def mixture_plan(cfg: SftMixConfig, available: dict[str, int], pretrain_chunks: int | None) -> dict:
    """Per-task train examples of the mixture (see the module docstring); JSON-able."""
    for name in cfg.tasks:
        if name not in available and cfg.tasks[name].weight > 0:
            raise ConfigError(f"sft-mix: task {name!r} in `tasks` has no examples (tasks: {', '.join(sorted(available))})")
    names = sorted(available)
    supplies, capped = [], []
    for name in names:
        spec = cfg.tasks.get(name, TaskSpec())
        cap = spec.cap or cfg.cap
        n = available[name]
        capped.append(min(n, cap) if cap else n)
        supplies.append(SourceSupply(name, n, spec.weight * capped[-1], spec.max_epochs or cfg.max_epochs))
    if not any(s.weight > 0 for s in supplies):
        raise InfeasibleMixError("sft-mix: no task has train examples and a positive weight")
    if cfg.budget == "epoch":
        budget = sum(c for c, s in zip(capped, supplies) if s.weight > 0)
    elif cfg.budget == "max":
        budget = max_budget(supplies)
    else:
        budget = int(cfg.budget)
    total_w = sum(s.weight for s in supplies)
    targets = split_budget([s.weight / total_w for s in supplies], budget)
    short = [(s, t) for s, t in zip(supplies, targets) if t > capacity(s)]
    if short:
        lines = [f"task {s.name!r} is short: its share needs {t} train examples ({t / max(s.available, 1):.2f} epochs "
                 f"of {s.available}) but max_epochs={s.max_epochs:g} allows {capacity(s)}" for s, t in short]
        raise InfeasibleMixError("infeasible SFT mixture: " + "; ".join(lines) + f". The weights reach at most "
                                 f"{max_budget(supplies)} train examples (budget: max), or raise max_epochs.")
    mp = plan(supplies, budget)
    out = {"budget": budget, "tasks": {}}
    pre_n = 0
    if cfg.pretrain is not None:
        s = cfg.pretrain.share
        pre_n = int(round(budget * s / (1 - s)))
        if pretrain_chunks is None or pre_n > pretrain_chunks:
            raise InfeasibleMixError(
                f"infeasible SFT mixture: task 'pretrain' is short: share {s:g} needs {pre_n} chunks but the mix "
                f"stage's train files hold {pretrain_chunks or 0}; lower pretrain.share or chunk_tokens")
    total = budget + pre_n
    for sp in mp.sources:
        tw = sp.target_weight * (1 - (cfg.pretrain.share if cfg.pretrain else 0))
        out["tasks"][sp.name] = {"available": sp.available, "examples": sp.tokens, "full_epochs": sp.full_epochs,
                                 "partial": sp.partial_tokens, "epochs": sp.epochs, "target_share": tw,
                                 "achieved_share": sp.tokens / total}
    if cfg.pretrain is not None:
        out["tasks"]["pretrain"] = {"available": pretrain_chunks, "examples": pre_n, "full_epochs": 0,
                                    "partial": pre_n, "epochs": pre_n / max(pretrain_chunks or 1, 1),
                                    "target_share": cfg.pretrain.share, "achieved_share": pre_n / total}
    out["train_examples"] = total
    return out


# ----------------------------------------------------------------------------- pack


def first_fit(lengths: np.ndarray, cap: int, open_bins: int) -> list[list[int]]:
    """Group items (in order) into sequences of at most ``cap`` tokens, first fit over the
    ``open_bins`` most recently opened sequences; a full or displaced sequence is closed.
    Returns the sequences in the order they were opened."""
    bins: list[list[int]] = []
    room: list[int] = []  # free tokens of the open sequences (indices into bins: open_ids)
    open_ids: list[int] = []
    for i, n in enumerate(lengths.tolist()):
        for j, r in enumerate(room):
            if n <= r:
                bins[open_ids[j]].append(i)
                room[j] -= n
                if room[j] == 0:
                    del room[j], open_ids[j]
                break
        else:
            bins.append([i])
            if cap - n > 0:
                open_ids.append(len(bins) - 1)
                room.append(cap - n)
                if len(open_ids) > open_bins:
                    del open_ids[0], room[0]
    return bins


class SequenceWriter:
    """Writes ``<prefix>-NNNNN.bin`` / ``.mask.bin`` / ``.idx`` of whole sequences, at most
    ``shard_tokens`` tokens per file (a longer sequence gets a file of its own)."""

    def __init__(self, out_dir: Path, prefix: str, dtype: np.dtype, shard_tokens: int):
        self.out, self.prefix, self.dtype, self.cap = out_dir, prefix, dtype, shard_tokens
        self.files: list[dict] = []
        self._cur: dict | None = None

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.files):05d}"
        self._cur = {"name": name, "tok": open(self.out / f"{name}.bin.tmp", "wb"),
                     "mask": open(self.out / f"{name}.mask.bin.tmp", "wb"), "starts": [],
                     "h_tok": hashlib.sha256(), "h_mask": hashlib.sha256(), "n": 0}

    def _close(self) -> None:
        c = self._cur
        if c is None:
            return
        for k in ("tok", "mask"):
            c[k].flush()
            os.fsync(c[k].fileno())
            c[k].close()
        idx = np.asarray(c["starts"] + [c["n"]], "<i8").tobytes()
        atomic_write_bytes(self.out / f"{c['name']}.idx", idx)
        os.replace(self.out / f"{c['name']}.bin.tmp", self.out / f"{c['name']}.bin")
        os.replace(self.out / f"{c['name']}.mask.bin.tmp", self.out / f"{c['name']}.mask.bin")
        self.files.append({"path": f"{c['name']}.bin", "tokens": c["n"], "sha256": c["h_tok"].hexdigest(),
                           "mask": f"{c['name']}.mask.bin", "mask_sha256": c["h_mask"].hexdigest(),
                           "idx": f"{c['name']}.idx", "idx_sha256": hashlib.sha256(idx).hexdigest(),
                           "examples": len(c["starts"])})
        self._cur = None

    def write(self, examples: list[tuple[np.ndarray, np.ndarray]]) -> None:
        n = sum(len(t) for t, _ in examples)
        if self._cur is None or (self._cur["n"] and self._cur["n"] + n > self.cap):
            self._close()
            self._open()
        c = self._cur
        for tok, mask in examples:
            c["starts"].append(c["n"])
            tb = np.ascontiguousarray(tok, self.dtype).tobytes()
            mb = np.ascontiguousarray(mask, np.uint8).tobytes()
            c["tok"].write(tb)
            c["mask"].write(mb)
            c["h_tok"].update(tb)
            c["h_mask"].update(mb)
            c["n"] += len(tok)

    def finish(self) -> list[dict]:
        self._close()
        return self.files

    @property
    def tokens(self) -> int:
        return sum(f["tokens"] for f in self.files)


def _mix_meta(mix_dir: Path) -> dict:
    try:
        meta = json.loads((mix_dir / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"sft-mix: pretrain.mix: cannot read {mix_dir / 'meta.json'}: {e}") from None
    if meta.get("format") != "curate-mixture/1":
        raise ConfigError(f"sft-mix: pretrain.mix: {mix_dir} is not a mix stage output (format {meta.get('format')!r})")
    return meta


def _chunks(mix_dir: Path, meta: dict, size: int) -> list[tuple[int, int]]:
    """(train file index, chunk index) of every whole ``size``-token chunk of the mix's train files."""
    return [(k, j) for k, f in enumerate(meta["train"]["files"]) for j in range(int(f["tokens"]) // size)]


class ShardsWorker:
    """Phase ``shards``: the examples of the mixture (kept) and the rest (rejected) of one shard."""

    def __init__(self, out_dir: str, work_dir: str):
        self.out, self.work = Path(out_dir), Path(work_dir)

    def __call__(self, task: dict) -> dict:
        i = task["index"]
        table = read_parquet(task["path"])
        idx = np.fromfile(self.work / f"idx-{i:05d}.bin", IDX)
        copies = np.fromfile(self.work / f"copies-{i:05d}.bin", "<i4")
        rejects = {r: (code, detail) for r, code, detail in task["rejects"]}
        ok = idx["status"] == OK
        in_mix = ok & ((idx["val"] == 1) | (copies > 0))
        for name, col in (("split", pa.array(np.where(idx["val"] == 1, "val", "train").tolist(), pa.string())),
                          ("copies", pa.array(copies, pa.int32())),
                          ("n_tokens", pa.array(idx["len"], pa.int64())),
                          ("n_target_tokens", pa.array(idx["target"], pa.int64())),
                          ("truncated_turns", pa.array(idx["trunc"], pa.int32()))):
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, col)
        reasons, details = [], []
        for r in np.flatnonzero(~in_mix).tolist():
            code, detail = rejects.get(r, (REASONS["not_sampled"], "left out by the task's cap or the budget"))
            reasons.append(code)
            details.append(detail)
        rejected = make_rejected(table.filter(pa.array(~in_mix)), "sft-mix", reasons, details)
        return write_shard(self.out, i, table.filter(pa.array(in_mix)), rejected, table.num_rows,
                           where=f"sft-mix shard {i}", input_info={"path": task["path"]})


class SftMix(GlobalStage):
    name = "sft-mix"
    version = "1"
    Config = SftMixConfig

    def stage_refs(self) -> list[str]:
        p = self.config.pretrain  # type: ignore[attr-defined]
        return [p.mix] if p is not None and "/" not in p.mix else []

    def _mix_dir(self, run_dir: Path) -> Path | None:
        p = self.config.pretrain  # type: ignore[attr-defined]
        if p is None:
            return None
        return Path(p.mix) if "/" in p.mix else Path(run_dir) / p.mix

    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        cfg: SftMixConfig = self.config  # type: ignore[assignment]
        out = [("template", cfg.template.load().sha256)]
        if cfg.tokenizer.path:
            if not Path(cfg.tokenizer.path).is_file():
                raise ConfigError(f"stage {self.stage_name!r}: tokenizer.path: no file {cfg.tokenizer.path}")
            out.append(("tokenizer", sha256_file(cfg.tokenizer.path)))
        mix_dir = self._mix_dir(run_dir)
        if mix_dir is not None:
            out.append(("pretrain:meta.json", sha256_file(mix_dir / "meta.json")))
        return out

    # -- phases -------------------------------------------------------------------------------
    def _tokenizer(self, ctx: GlobalContext, mix_meta: dict | None) -> dict:
        cfg: SftMixConfig = self.config  # type: ignore[assignment]
        template = cfg.template.load()
        if cfg.tokenizer.path:
            tok = Tokenizer.from_file(cfg.tokenizer.path)
            base = {"kind": "file", "path": cfg.tokenizer.path, "sha256": sha256_file(cfg.tokenizer.path)}
        elif mix_meta is not None:
            p = self._mix_dir(ctx.run_dir) / "tokenizer.json"
            tok = Tokenizer.from_file(str(p))
            base = {"kind": "pretrain mix", "path": str(p), "sha256": sha256_file(p)}
        else:
            texts = []
            for shard in ctx.input_shards:
                for msgs in read_parquet(shard, columns=["messages"]).column("messages").to_pylist():
                    texts.append("\n".join(m["content"] for m in msgs))
                    if len(texts) >= cfg.tokenizer.sample_examples:
                        break
                if len(texts) >= cfg.tokenizer.sample_examples:
                    break
            tok = bpe.train_bpe(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.eos_token)
            base = {"kind": "trained", "examples": len(texts), "vocab_size": cfg.tokenizer.vocab_size}
        if mix_meta is not None and base.get("sha256") != mix_meta["tokenizer"]["sha256"]:
            raise ConfigError(f"stage {ctx.stage_name!r}: tokenizer.path differs from the pretraining mix's tokenizer "
                              f"(sha256 {base.get('sha256', '')[:12]} vs {mix_meta['tokenizer']['sha256'][:12]}); "
                              "leave tokenizer.path unset to use the mix's")
        base_vocab = tok.get_vocab_size()
        added = add_special_tokens(tok, template.special_tokens)
        blob = tok.to_str(pretty=False)
        out = ctx.out_dir / "tokenizer.json"
        atomic_write_bytes(out, blob.encode("utf-8"))
        return {"base": base, "base_vocab_size": base_vocab, "added": added, "files": [file_info(out)]}

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: SftMixConfig = self.config  # type: ignore[assignment]
        cfg_json = cfg.model_dump(mode="json")
        template = cfg.template.load()
        mix_dir = self._mix_dir(ctx.run_dir)
        mix_meta = _mix_meta(mix_dir) if mix_dir is not None else None
        work = ctx.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
        shards = [str(Path(p).resolve()) for p in ctx.input_shards]
        if not shards:
            raise ConfigError(f"stage {ctx.stage_name!r}: no input shards")

        tk = ctx.phases.step("tokenizer", lambda: self._tokenizer(ctx, mix_meta))
        tok_path = ctx.phases.file(tk["files"][0])
        tok = Tokenizer.from_file(str(tok_path))
        dtype = bpe.token_dtype(tok.get_vocab_size())
        eos_name = cfg.tokenizer.eos_token if tok.token_to_id(cfg.tokenizer.eos_token) is not None else template.end_of_turn
        task_names = sorted({x for s in shards for x in read_parquet(s, columns=["task"]).column("task").to_pylist()})

        tasks = [{"index": i, "path": p} for i, p in enumerate(shards)]
        enc = ctx.phases.map("encode", EncodeWorker, (str(tok_path), cfg_json, str(work), task_names), tasks,
                             desc=f"{ctx.stage_name}: render + tokenise")
        chunk = cfg.pretrain.chunk_tokens or cfg.context_length if cfg.pretrain else 0
        if cfg.pretrain is not None and chunk > cfg.context_length:
            raise ConfigError(f"stage {ctx.stage_name!r}: pretrain.chunk_tokens {chunk} > context_length {cfg.context_length}")
        chunks = _chunks(mix_dir, mix_meta, chunk) if mix_meta is not None else None

        def do_plan() -> dict:
            avail: dict[str, int] = {}
            for r in enc:
                for name, c in r["tasks"].items():
                    avail[name] = avail.get(name, 0) + c["train"]
            return mixture_plan(cfg, {k: v for k, v in avail.items() if v > 0}, len(chunks) if chunks is not None else None)

        mplan = ctx.phases.step("plan", do_plan)
        packed = ctx.phases.step("pack", lambda: self._pack(ctx, enc, mplan, task_names, dtype, chunks, chunk,
                                                             mix_dir, mix_meta, tk, template, tok, eos_name))
        stasks = [dict(t, rejects=r["rejects"]) for t, r in zip(tasks, enc)]
        markers = ctx.phases.map("shards", ShardsWorker, (str(ctx.out_dir.resolve()), str(work)), stasks,
                                 desc=f"{ctx.stage_name}: shards")
        body = sum_shards(markers, f"stage {ctx.stage_name}")
        meta_files = [ctx.phases.file(f) for f in packed["files"]]
        return GlobalResult(
            input_rows=body["input_rows"], kept_rows=body["kept_rows"], rejected_rows=body["rejected_rows"],
            reasons=body["reasons"], outputs=body["outputs"] + [file_info(p) for p in meta_files] + [file_info(tok_path)],
            rejected_outputs=body["rejected_outputs"], shards=body["shards"],
            extra={"sft": {"tasks": packed["tasks"], "train_tokens": packed["train_tokens"],
                           "val_tokens": packed["val_tokens"], "budget": mplan["budget"],
                           "train_examples": mplan["train_examples"]}},
        )

    def _pack(self, ctx, enc, mplan, task_names, dtype, chunks, chunk, mix_dir, mix_meta, tk, template, tok, eos_name):
        cfg: SftMixConfig = self.config  # type: ignore[assignment]
        work = ctx.work_dir.resolve()
        out = ctx.out_dir
        idxs = [np.fromfile(work / f"idx-{i:05d}.bin", IDX) for i in range(len(enc))]
        # Copies per train example: full epochs, plus one for the first `partial` in key order.
        copies = [np.zeros(len(x), np.int32) for x in idxs]
        for k, name in enumerate(task_names):
            tp = mplan["tasks"].get(name)
            if tp is None:
                continue
            keys, where = [], []
            for i, x in enumerate(idxs):
                m = np.flatnonzero((x["status"] == OK) & (x["val"] == 0) & (x["task"] == k))
                keys.append(x["key"][m])
                where.append(np.stack([np.full(len(m), i), m], axis=1))
            if not keys:
                continue
            keys_all = np.concatenate(keys)
            where_all = np.concatenate(where)
            order = np.lexsort((where_all[:, 1], where_all[:, 0], keys_all))
            for j, o in enumerate(order.tolist()):
                s, r = where_all[o]
                copies[s][r] = tp["full_epochs"] + (1 if j < tp["partial"] else 0)
        for i, c in enumerate(copies):
            atomic_write_bytes(work / f"copies-{i:05d}.bin", c.astype("<i4").tobytes())
        # Train items: (kind, a, b, copy) with kind 0 = example (shard a, row b), 1 = pretrain chunk.
        items, lens, mkeys = [], [], []
        for i, (x, c) in enumerate(zip(idxs, copies)):
            for r in np.flatnonzero(c > 0).tolist():
                for cp in range(int(c[r])):
                    items.append((0, i, r, cp))
                    lens.append(int(x["len"][r]))
                    mkeys.append(int(x["key"][r]) ^ (cp * _GOLD & 0xFFFFFFFFFFFFFFFF))
        if chunks is not None:
            n_pre = mplan["tasks"]["pretrain"]["examples"]
            ck = [xxhash.xxh64_intdigest(f"{a}:{b}".encode(), seed=cfg.seed) for a, b in chunks]
            for j in sorted(range(len(chunks)), key=lambda j: (ck[j], j))[:n_pre]:
                items.append((1, chunks[j][0], chunks[j][1], 0))
                lens.append(chunk)
                mkeys.append(ck[j])
        mixed = fmix64(np.asarray(mkeys, np.uint64) ^ np.uint64(cfg.seed)) if items else np.empty(0, np.uint64)
        order = sorted(range(len(items)), key=lambda j: (int(mixed[j]), items[j]))
        toks = [np.memmap(work / f"tok-{i:05d}.bin", dtype=dtype, mode="r") if x["len"].sum() else np.empty(0, dtype)
                for i, x in enumerate(idxs)]
        masks = [np.memmap(work / f"mask-{i:05d}.bin", dtype=np.uint8, mode="r") if x["len"].sum() else np.empty(0, np.uint8)
                 for i, x in enumerate(idxs)]
        pre_tok = []
        if mix_meta is not None:
            pdt = np.dtype(mix_meta["dtype"])
            pre_tok = [np.memmap(mix_dir / f["path"], dtype=pdt, mode="r") for f in mix_meta["train"]["files"]]

        def example(item):
            kind, a, b, _ = item
            if kind == 1:
                t = np.asarray(pre_tok[a][b * chunk:(b + 1) * chunk], dtype)
                return t, np.ones(len(t), np.uint8)
            o, n = int(idxs[a]["off"][b]), int(idxs[a]["len"][b])
            return toks[a][o:o + n], masks[a][o:o + n]

        for stale in list(out.glob("train-*")) + list(out.glob("val-*")):
            stale.unlink()
        train_w = SequenceWriter(out, "train", dtype, cfg.shard_tokens)
        ordered = [items[j] for j in order]
        for seq in first_fit(np.asarray([lens[j] for j in order], np.int64), cfg.context_length, cfg.open_bins):
            train_w.write([example(ordered[j]) for j in seq])
        train_files = train_w.finish()
        val_items = []
        for i, x in enumerate(idxs):
            for r in np.flatnonzero((x["status"] == OK) & (x["val"] == 1)).tolist():
                val_items.append((int(x["task"][r]), int(x["key"][r]), i, r))
        val_items.sort()
        val_w = SequenceWriter(out, "val", dtype, cfg.shard_tokens)
        vl = np.asarray([int(idxs[i]["len"][r]) for _, _, i, r in val_items], np.int64)
        for seq in first_fit(vl, cfg.context_length, cfg.open_bins):
            val_w.write([example((0, val_items[j][2], val_items[j][3], 0)) for j in seq])
        val_files = val_w.finish()

        task_meta = {}
        for k, name in enumerate(task_names):
            tp = mplan["tasks"].get(name)
            ex = tokens = val_ex = 0
            for x, c in zip(idxs, copies):
                m = (x["task"] == k) & (x["status"] == OK)
                ex += int(c[m].sum())
                tokens += int((x["len"][m] * c[m]).sum())
                val_ex += int((m & (x["val"] == 1)).sum())
            task_meta[name] = {"examples": ex, "tokens": tokens, "val_examples": val_ex,
                               "target_share": tp["target_share"] if tp else 0.0,
                               "achieved_share": tp["achieved_share"] if tp else 0.0,
                               "available": tp["available"] if tp else 0, "epochs": tp["epochs"] if tp else 0.0}
        if chunks is not None:
            tp = mplan["tasks"]["pretrain"]
            task_meta["pretrain"] = {"examples": tp["examples"], "tokens": tp["examples"] * chunk, "val_examples": 0,
                                     "target_share": tp["target_share"], "achieved_share": tp["achieved_share"],
                                     "available": tp["available"], "epochs": tp["epochs"]}
        meta = {
            "format": FORMAT,
            "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json"),
                          "vocab_size": tok.get_vocab_size(), "eos_token": eos_name, "eos_id": tok.token_to_id(eos_name),
                          "base": tk["base"], "base_vocab_size": tk["base_vocab_size"], "added_special_tokens": tk["added"]},
            "dtype": dtype.name,
            "template": {"name": template.name, "sha256": template.sha256, "end_of_turn": template.end_of_turn,
                         "end_of_turn_id": tok.token_to_id(template.end_of_turn), "last_turn_only": cfg.last_turn_only},
            "context_length": cfg.context_length,
            "train": {"tokens": train_w.tokens, "examples": sum(f["examples"] for f in train_files), "files": train_files},
            "val": {"tokens": val_w.tokens, "examples": sum(f["examples"] for f in val_files), "files": val_files},
            "tasks": task_meta,
            "mixing": {"budget": mplan["budget"], "cap": cfg.cap, "seed": cfg.seed, "unit": "train examples",
                       "weights": {n: (cfg.tasks.get(n, TaskSpec()).weight) for n in task_names},
                       "pretrain": None if cfg.pretrain is None else {
                           "mix": str(mix_dir), "share": cfg.pretrain.share, "chunk_tokens": chunk,
                           "mix_tokenizer_sha256": mix_meta["tokenizer"]["sha256"]}},
            "packing": {"rule": "examples whole, back to back; grouped first-fit (at most open_bins open) into "
                                "sequences of at most context_length tokens, written sequence after sequence",
                        "open_bins": cfg.open_bins, "overlong": cfg.overlong},
            "split": {"val_fraction": cfg.val_fraction, "rule": "xxh3_64(utf-8 id) >> 11 < val_fraction * 2**53"},
        }
        atomic_write_json(out / "meta.json", meta)
        files = [file_info(out / "meta.json")] + [file_info(work / f"copies-{i:05d}.bin") for i in range(len(idxs))]
        for f in train_files + val_files:
            files += [file_info(out / f["path"]), file_info(out / f["mask"]), file_info(out / f["idx"])]
        return {"files": files, "tasks": task_meta, "train_tokens": train_w.tokens, "val_tokens": val_w.tokens}


STAGE = SftMix
