"""sft-read: instruction and chat files -> conversation shards, one shard per input file.

Every record of every input file (read by :func:`curate.readers.iter_records`: JSONL, JSONL.gz
/ .zst, JSON arrays, Parquet, Arrow) is normalised by :mod:`filters.sft_formats` into one
conversation (the ``messages`` column) or rejected with an ``sft-read.*`` reason. The config
gives each file (matched by file name or path glob) its format, task, language and source;
a file that matches no entry gets the defaults and its file stem as task.

Columns: the core ``id`` (``blake2b(<input path> + "#" + record index)``, as extract and read
make them), ``text`` (the user turns joined by blank lines: what prompt deduplication and SQL
see), ``url`` (null), ``domain`` (empty), ``source``; then ``task``, ``lang``, ``messages``
(``list<struct<role, content, name, tool_calls, tool_call_id>>``, OpenAI's shape, which
``curate export --format messages`` writes), ``tools`` (the tool schemas as JSON text, or null),
``n_turns``, ``input_file`` and ``input_index`` (the record's position in its file).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.readers import DEFAULT_MAX_RECORD_BYTES, detect_format, iter_records
from curate.schema import make_rejected
from curate.stage import ShardResult, SourceStage
from filters import sft_formats as sf
from stages.extract import doc_id

TOOL_CALL = pa.struct([
    pa.field("id", pa.string()),
    pa.field("type", pa.string()),
    pa.field("function", pa.struct([pa.field("name", pa.string()), pa.field("arguments", pa.string())])),
])
MESSAGE = pa.struct([
    pa.field("role", pa.string()),
    pa.field("content", pa.string()),
    pa.field("name", pa.string()),
    pa.field("tool_calls", pa.list_(TOOL_CALL)),
    pa.field("tool_call_id", pa.string()),
])
SFT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("source", pa.string()),
    pa.field("task", pa.string()),
    pa.field("lang", pa.string()),
    pa.field("messages", pa.list_(MESSAGE)),
    pa.field("tools", pa.string()),
    pa.field("n_turns", pa.int32()),
    pa.field("input_file", pa.string()),
    pa.field("input_index", pa.int64()),
])
READER_REASON = "sft-read.bad_record"


class SftSource(StageConfig):
    """How to read the files one ``sources`` entry matches.

    Attributes:
        format: one of :data:`filters.sft_formats.FORMATS` (``auto``: by each record's keys).
        task: the task name (default: the file stem).
        task_field: take the task from this record field when it is a non-empty string
            (e.g. Dolly's ``category``), else ``task``.
        source: the ``source`` column (default: the task).
        lang: language code of the file (perplexity models are per language).
    """

    format: Literal[sf.FORMATS] = "auto"  # type: ignore[valid-type]
    task: str | None = None
    task_field: str | None = None
    source: str | None = None
    lang: str | None = None


class SftReadConfig(StageConfig):
    """Config of the sft-read stage.

    Attributes:
        sources: file name or path glob -> :class:`SftSource` (first match in order wins).
        default: settings of files no entry matches.
        include: in input folders, the file name globs read.
        max_record_bytes: longer records are rejected (``sft-read.bad_record``).
    """

    sources: dict[str, SftSource] = {}
    default: SftSource = SftSource()
    include: tuple[str, ...] = ("*.json", "*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.parquet", "*.arrow")
    max_record_bytes: int = Field(default=DEFAULT_MAX_RECORD_BYTES, gt=0)


def messages_array(rows: list[list[dict] | None]) -> pa.Array:
    """The ``messages`` column for normalised conversations (None: null)."""
    return pa.array(rows, pa.list_(MESSAGE))


class SftRead(SourceStage):
    name = "sft-read"
    version = "1"
    Config = SftReadConfig

    def list_inputs(self, paths: list[str]) -> list[str]:
        """The files given, and the files in given folders matching ``include`` (sorted)."""
        out: list[str] = []
        for p in paths:
            path = Path(p)
            if path.is_dir():
                for f in sorted(path.rglob("*")):
                    if f.is_file() and any(fnmatch.fnmatch(f.name, g) for g in self.config.include):
                        out.append(str(f))
            elif path.is_file():
                if detect_format(path) is None:
                    raise ConfigError(f"sft-read input {p}: the name does not tell its format (.json, .jsonl, ...)")
                out.append(str(path))
            else:
                raise ConfigError(f"sft-read input not found: {p}")
        return list(dict.fromkeys(out))

    def spec_for(self, path: str) -> tuple[SftSource, str]:
        """The source settings of ``path`` and its task name."""
        cfg: SftReadConfig = self.config  # type: ignore[assignment]
        name = Path(path).name
        spec = next((s for g, s in cfg.sources.items() if fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g)),
                    cfg.default)
        stem = name.split(".")[0]
        return spec, spec.task or stem

    def process_source(self, path: str) -> ShardResult:
        cfg: SftReadConfig = self.config  # type: ignore[assignment]
        spec, task = self.spec_for(path)
        cols: dict[str, list] = {f.name: [] for f in SFT_SCHEMA}
        reasons: list[str | None] = []
        details: list[str | None] = []
        for rec in iter_records(path, max_record_bytes=cfg.max_record_bytes):
            row_task = task
            msgs = tools = None
            reason = detail = None
            if rec.error is not None:
                reason, detail = READER_REASON, rec.error
            else:
                if spec.task_field:
                    v = rec.value.get(spec.task_field)  # type: ignore[union-attr]
                    row_task = v if isinstance(v, str) and v.strip() else task
                try:
                    conv = sf.normalize(rec.value, spec.format)
                    msgs = conv.messages
                    tools = json.dumps(conv.tools, ensure_ascii=False) if conv.tools else None
                except sf.FormatReject as e:
                    reason, detail = e.code, e.detail
            cols["id"].append(doc_id(path, rec.index))
            cols["text"].append(sf.prompt_text(msgs) if msgs else None)
            cols["url"].append(None)
            cols["domain"].append("")
            cols["source"].append(spec.source or row_task)
            cols["task"].append(row_task)
            cols["lang"].append(spec.lang)
            cols["messages"].append(msgs)
            cols["tools"].append(tools)
            cols["n_turns"].append(len(msgs) if msgs else 0)
            cols["input_file"].append(path)
            cols["input_index"].append(rec.index)
            reasons.append(reason)
            details.append(detail)
        table = pa.Table.from_pydict(cols, schema=SFT_SCHEMA)
        keep = pa.array([r is None for r in reasons], pa.bool_())
        rej_idx = pa.array([i for i, r in enumerate(reasons) if r is not None], pa.int64())
        rejected = make_rejected(table.take(rej_idx), self.name, [r for r in reasons if r is not None],
                                 [d for r, d in zip(reasons, details) if r is not None])
        return ShardResult(kept=table.filter(keep), rejected=rejected, stats={"records": len(reasons)},
                           n_input=len(reasons))


STAGE = SftRead
