"""Arrow schemas for document and rejected-document shards.

Every document shard carries the core columns below; each stage appends its own columns
(``lang``, ``ppl``, ``pii_counts`` ...). A rejected shard has the columns of the stage's
input plus ``stage`` and ``reason`` (a stable dotted code such as ``extract.empty``), and
``detail`` (free text or, for dedup, the id of the kept twin).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import pyarrow as pa

CORE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("source", pa.string()),
)
CORE_NAMES = tuple(f.name for f in CORE_FIELDS)

REJECT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
)
REJECT_NAMES = tuple(f.name for f in REJECT_FIELDS)


def check_document_table(table: pa.Table, where: str = "table") -> None:
    """Raise ValueError when ``table`` lacks a core column or has one of the wrong type."""
    for f in CORE_FIELDS:
        idx = table.schema.get_field_index(f.name)
        if idx < 0:
            raise ValueError(f"{where}: missing core column {f.name!r}")
        if table.schema.field(idx).type != f.type:
            raise ValueError(
                f"{where}: column {f.name!r} has type {table.schema.field(idx).type}, expected {f.type}"
            )


def domain_of(url: str | None) -> str:
    """The ``domain`` column of a URL: its lower-cased host without ``www.`` ("" if none)."""
    if not url:
        return ""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def rejected_schema(doc_schema: pa.Schema) -> pa.Schema:
    """The rejected-shard schema for documents of ``doc_schema``."""
    fields = [f for f in doc_schema if f.name not in REJECT_NAMES]
    return pa.schema(fields + list(REJECT_FIELDS))


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def make_rejected(
    table: pa.Table,
    stage: str,
    reasons: Sequence[str],
    details: Sequence[str | None] | None = None,
) -> pa.Table:
    """Attach ``stage``/``reason``/``detail`` columns to rows rejected by a stage.

    Args:
        table: the rejected rows, with the columns they had (input columns plus any
            signal columns the stage computed before deciding).
        stage: the stage name.
        reasons: one reason code per row; each must start with ``"<stage>."``.
        details: optional free text per row (dedup puts the kept twin's id here).
    """
    n = table.num_rows
    if len(reasons) != n:
        raise ValueError(f"{n} rejected rows but {len(reasons)} reasons")
    for r in set(reasons):
        if not r or "." not in r:
            raise ValueError(f"reason code {r!r} is not of the form '<stage>.<code>'")
    if details is None:
        details = [None] * n
    if len(details) != n:
        raise ValueError(f"{n} rejected rows but {len(details)} details")
    for name in REJECT_NAMES:
        if name in table.column_names:
            table = table.drop_columns([name])
    table = table.append_column(REJECT_FIELDS[0], pa.array([stage] * n, pa.string()))
    table = table.append_column(REJECT_FIELDS[1], pa.array(list(reasons), pa.string()))
    table = table.append_column(REJECT_FIELDS[2], pa.array(list(details), pa.string()))
    return table


def split_by_mask(table: pa.Table, keep_mask: Sequence[bool]) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into (kept, dropped) rows, order preserved."""
    mask = pa.array(list(keep_mask), pa.bool_())
    import pyarrow.compute as pc

    return table.filter(mask), table.filter(pc.invert(mask))
