"""sft-clean: PII scrubbing on every turn and decontamination against evaluation sets.

Per conversation (one shard at a time):

1. **PII**: the scrubber of :mod:`filters.pii` (the pii stage's) runs on the content of every
   turn and on the string values inside tool-call arguments; ``pii_total`` counts the
   replacements and ``text`` (the prompt) is rebuilt from the scrubbed turns.
2. **Decontamination** (:mod:`filters.decontam`): the turns of the roles in ``roles`` (system
   and user by default: evaluation *prompts* leaking into training prompts) are matched
   against the evaluation sets; a match rejects the example as ``sft-clean.contaminated``
   with ``detail`` = the matched item's id (``<set name>:<id>``).

The evaluation files are read when the config is built and their sha256 is part of the config,
so a changed evaluation set makes a finished stage stale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.reasons import declare
from curate.schema import make_rejected, split_by_mask
from curate.shardio import sha256_file
from curate.stage import MapStage, ShardResult
from filters.decontam import Decontaminator, load_eval_texts
from filters.pii import DEFAULT_PHONE_REGIONS, TYPES, Scrubber
from filters.sft_formats import prompt_text
from stages.sft_read import messages_array

REASONS = declare("sft-clean", {
    "contaminated": "a prompt turn overlaps an evaluation item (n-gram or short-prompt rule); detail is its id",
})


class EvalSet(StageConfig):
    """One evaluation set (JSONL; see :func:`filters.decontam.load_eval_texts`).

    Attributes:
        path: the file.
        name: the set name in reported ids (default: the file stem).
        id_field / text_fields: for files in neither known layout.
        resolved / sha256: the absolute path and the file's sha256, filled in when the config is
            built on the driver (workers, whose working directory may differ, read ``resolved``).
    """

    path: str
    name: str | None = None
    id_field: str | None = None
    text_fields: tuple[str, ...] | None = None
    resolved: str | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _hash(self) -> EvalSet:
        p = Path(self.resolved or self.path)
        if not p.is_file():
            raise ValueError(f"evaluation set not found: {self.path}")
        digest = sha256_file(p)
        if self.sha256 is not None and self.sha256 != digest:
            raise ValueError(f"evaluation set {self.path} changed (sha256 {digest[:12]} != {self.sha256[:12]})")
        object.__setattr__(self, "resolved", str(p.resolve()))
        object.__setattr__(self, "sha256", digest)
        return self


class PiiSettings(StageConfig):
    """The scrubber's settings (as in the pii stage)."""

    enabled: bool = True
    policy: Literal["placeholder", "pseudonym"] = "placeholder"
    key_env: str | None = None
    types: tuple[str, ...] = TYPES
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS


class SftCleanConfig(StageConfig):
    """Config of the sft-clean stage.

    Attributes:
        pii: scrubber settings (:class:`PiiSettings`).
        eval_sets: evaluation sets to decontaminate against (none: no decontamination).
        ngram: the n of the n-gram rule, in normalised tokens (13 as in GPT-3).
        min_tokens: shorter evaluation texts are ignored (too generic to match).
        short_min_coverage: the share of a turn a short evaluation text must make up.
        roles: the turn roles matched against the evaluation sets.
    """

    pii: PiiSettings = PiiSettings()
    eval_sets: tuple[EvalSet, ...] = ()
    ngram: int = Field(default=13, ge=1)
    min_tokens: int = Field(default=5, ge=1)
    short_min_coverage: float = Field(default=0.5, gt=0, le=1)
    roles: tuple[Literal["system", "user", "assistant", "tool"], ...] = ("system", "user")


def _scrub_json(value: Any, scrub) -> tuple[Any, int]:
    """Scrub every string inside a JSON value; returns (new value, replacements)."""
    if isinstance(value, str):
        r = scrub(value)
        return r.text, sum(r.counts.values())
    if isinstance(value, list):
        out, n = [], 0
        for v in value:
            nv, k = _scrub_json(v, scrub)
            out.append(nv)
            n += k
        return out, n
    if isinstance(value, dict):
        out_d, n = {}, 0
        for k, v in value.items():
            nv, c = _scrub_json(v, scrub)
            out_d[k] = nv
            n += c
        return out_d, n
    return value, 0


class SftClean(MapStage):
    name = "sft-clean"
    version = "1"
    Config = SftCleanConfig

    def setup(self) -> None:
        cfg: SftCleanConfig = self.config  # type: ignore[assignment]
        key = os.environ.get(cfg.pii.key_env, "") if cfg.pii.key_env else ""
        if cfg.pii.policy == "pseudonym" and not key:
            raise ConfigError("sft-clean: pii.policy pseudonym needs pii.key_env naming a set variable")
        self.scrubber = Scrubber(policy=cfg.pii.policy, key=key, types=cfg.pii.types,
                                 phone_regions=cfg.pii.phone_regions) if cfg.pii.enabled else None
        evals = []
        for s in cfg.eval_sets:
            evals += load_eval_texts(s.resolved or s.path, s.name or Path(s.path).stem, s.id_field, s.text_fields)
        self.decon = Decontaminator(evals, cfg.ngram, cfg.min_tokens, cfg.short_min_coverage) if evals else None

    def _scrub_turns(self, msgs: list[dict], doc_id: str) -> int:
        n = 0
        scrub = lambda t: self.scrubber.scrub(t, doc_id)  # noqa: E731
        for m in msgs:
            if m.get("content"):
                r = scrub(m["content"])
                m["content"] = r.text
                n += sum(r.counts.values())
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                try:
                    args = json.loads(fn["arguments"])
                except (TypeError, ValueError):
                    continue
                new, k = _scrub_json(args, scrub)
                if k:
                    fn["arguments"] = json.dumps(new, ensure_ascii=False)
                    n += k
        return n

    def process(self, table: pa.Table) -> ShardResult:
        if not hasattr(self, "scrubber"):
            self.setup()
        cfg: SftCleanConfig = self.config  # type: ignore[assignment]
        if "messages" not in table.column_names:
            raise ConfigError("sft-clean: the input has no messages column (read it with sft-read)")
        ids = table.column("id").to_pylist()
        convs = table.column("messages").to_pylist()
        totals, texts, matches = [], [], []
        roles = set(cfg.roles)
        for doc_id, msgs in zip(ids, convs):
            n = self._scrub_turns(msgs, doc_id) if self.scrubber is not None else 0
            totals.append(n)
            texts.append(prompt_text(msgs))
            m = None
            if self.decon is not None:
                m = self.decon.match(t["content"] for t in msgs if t["role"] in roles)
            matches.append(m)
        for name, col in (("messages", messages_array(convs)), ("text", pa.array(texts, pa.string())),
                          ("pii_total", pa.array(totals, pa.int32()))):
            if name in table.column_names:
                i = table.column_names.index(name)
                table = table.set_column(i, pa.field(name, col.type), col)
            else:
                table = table.append_column(name, col)
        kept, dropped = split_by_mask(table, [m is None for m in matches])
        details = [m for m in matches if m is not None]
        rejected = make_rejected(dropped, self.name, [REASONS["contaminated"]] * len(details), details)
        stats = {"pii.total": sum(totals), "pii.docs_with_pii": sum(1 for n in totals if n),
                 "contaminated": len(details)}
        return ShardResult(kept=kept, rejected=rejected, stats=stats)


STAGE = SftClean
