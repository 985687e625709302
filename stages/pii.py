"""pii: scrub personal identifiers and secrets from ``text`` and count them per document.

Replaces every detection of :mod:`filters.pii` with a typed placeholder (``<EMAIL>``) or a
per-document pseudonym (``<EMAIL_kqzmxwab>``, keyed HMAC), and adds two columns:

* ``pii_counts``: a struct with one int32 field per type (``email``, ``phone``, ``ipv4``,
  ``ipv6``, ``credit_card``, ``iban``, ``us_ssn``, ``cn_resident_id``, ``secret``), queryable
  in DuckDB as ``pii_counts.email``;
* ``pii_total``: the sum of those counts.

A document with more than ``max_hits`` detections (when set) is rejected as
``pii.too_many_hits``; its rejected row carries the scrubbed text too, so the stage never
writes an identifier anywhere. The shard stats (summed into the manifest by the runner)
are ``pii.<type>`` counts, ``pii.total``, ``pii.docs_with_pii`` and ``pii.chars_in``.
"""

from __future__ import annotations

import os
from typing import Literal

import pyarrow as pa
from pydantic import field_validator, model_validator

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.schema import make_rejected, split_by_mask
from curate.stage import MapStage, ShardResult
from curate.reasons import declare

REASONS = declare("pii", {
    "too_many_hits": "more PII detections than max_hits: the page is a list of personal data",
})
from filters.pii import DEFAULT_PHONE_REGIONS, TYPES, Scrubber

COUNTS_TYPE = pa.struct([pa.field(t, pa.int32()) for t in TYPES])


class PiiConfig(StageConfig):
    """Config of the pii stage.

    Attributes:
        policy: ``placeholder`` (``<EMAIL>``) or ``pseudonym`` (``<EMAIL_kqzmxwab>``, the
            same value gets the same tag within a document, different documents do not share
            tags).
        key: HMAC key of the pseudonyms. Prefer ``key_env``: the config, key included, is
            written into the stage manifest.
        key_env: name of an environment variable holding the key (read in each worker).
        types: the types to scrub and count (default: all).
        phone_regions: regions whose national phone formats are accepted without a
            ``+``/``00`` prefix (ISO 3166 alpha-2).
        max_hits: reject documents with more detections than this (``None``: never).
        text_column: the column to scrub.
    """

    policy: Literal["placeholder", "pseudonym"] = "placeholder"
    key: str = ""
    key_env: str | None = None
    types: tuple[str, ...] = TYPES
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    max_hits: int | None = None
    text_column: str = "text"

    @field_validator("types")
    @classmethod
    def _types(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t not in TYPES]
        if bad:
            raise ValueError(f"unknown PII types {bad}; known: {', '.join(TYPES)}")
        return v

    @field_validator("max_hits")
    @classmethod
    def _max_hits(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("max_hits must be >= 0")
        return v

    @model_validator(mode="after")
    def _pseudonym_key(self) -> PiiConfig:
        if self.policy == "pseudonym" and not (self.key or self.key_env):
            raise ValueError("policy 'pseudonym' needs 'key' or 'key_env'")
        return self


class Pii(MapStage):
    name = "pii"
    version = "1"
    Config = PiiConfig

    def setup(self) -> None:
        cfg: PiiConfig = self.config  # type: ignore[assignment]
        key = cfg.key
        if cfg.key_env:
            key = os.environ.get(cfg.key_env, "")
            if not key and cfg.policy == "pseudonym":
                raise ConfigError(f"pii: environment variable {cfg.key_env!r} (key_env) is not set")
        self.scrubber = Scrubber(policy=cfg.policy, key=key, types=cfg.types, phone_regions=cfg.phone_regions)

    def process(self, table: pa.Table) -> ShardResult:
        if not hasattr(self, "scrubber"):
            self.setup()
        cfg: PiiConfig = self.config  # type: ignore[assignment]
        idx = table.schema.get_field_index(cfg.text_column)
        if idx < 0:
            raise ConfigError(f"pii: input has no column {cfg.text_column!r}")
        texts = table.column(idx).to_pylist()
        ids = table.column("id").to_pylist() if "id" in table.column_names else [""] * len(texts)

        new_texts: list[str | None] = []
        per_type: dict[str, list[int]] = {t: [] for t in TYPES}
        totals: list[int] = []
        stats = {f"pii.{t}": 0 for t in TYPES}
        docs_with = 0
        chars_in = 0
        for text, doc_id in zip(texts, ids):
            if not text:
                new_texts.append(text)
                for t in TYPES:
                    per_type[t].append(0)
                totals.append(0)
                continue
            chars_in += len(text)
            res = self.scrubber.scrub(text, doc_id or "")
            new_texts.append(res.text)
            n = 0
            for t in TYPES:
                c = res.counts.get(t, 0)
                per_type[t].append(c)
                stats[f"pii.{t}"] += c
                n += c
            totals.append(n)
            docs_with += n > 0

        field = table.schema.field(idx)
        table = table.set_column(idx, field, pa.array(new_texts, field.type))
        counts = pa.StructArray.from_arrays([pa.array(per_type[t], pa.int32()) for t in TYPES],
                                            fields=list(COUNTS_TYPE))
        for name, col in (("pii_counts", counts), ("pii_total", pa.array(totals, pa.int32()))):
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, col)

        stats.update({"pii.total": sum(totals), "pii.docs_with_pii": docs_with, "pii.chars_in": chars_in})
        if cfg.max_hits is None:
            kept, dropped = table, table.slice(0, 0)
        else:
            kept, dropped = split_by_mask(table, [n <= cfg.max_hits for n in totals])
        reasons = ["pii.too_many_hits"] * dropped.num_rows
        details = [f"{n} detections > max_hits {cfg.max_hits}" for n in totals if cfg.max_hits is not None and n > cfg.max_hits]
        rejected = make_rejected(dropped, self.name, reasons, details)
        return ShardResult(kept=kept, rejected=rejected, stats=stats)


STAGE = Pii
