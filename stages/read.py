"""read: existing corpora (JSONL / JSONL.gz / .zst, JSON arrays, Parquet, Arrow, HF ``datasets``
folders) -> document shards, one shard per input file.

A column mapping says which input field holds the text, the id, the URL, the source and the
domain (dotted names reach into nested objects / struct columns, e.g. ``metadata.url``);
``keep_columns`` carries more fields along as typed columns. Every record the input holds
becomes a kept row or a rejected row with a ``read.*`` reason, so the stage's input count is
the number of records in the files (see :mod:`curate.readers` for what counts as one).

Ids: the mapped id column when there is one (strings, or integers written in decimal);
otherwise ``blake2b(<input path as the pipeline names it> + "#" + record index)``, the same
hash extract uses. The path rather than the bare file name, because corpora repeat file
names across folders (FineWeb's dumps, every ``datasets`` split's ``data-00000-of-00001.arrow``).
Mapped ids are checked for duplicates within each input file (one task each), not across
files: a corpus whose ids restart in every file should leave ``id`` unmapped and keep its own
under another name (``keep_columns``).

A Parquet / Arrow input whose mapped column is missing or of the wrong type is a
:class:`~curate.errors.ConfigError` naming the file and the column, raised while the inputs
are listed (before any work): it is a mapping mistake that would reject every row of every
such file, better said once than a million times.

Inputs may be storage URIs (``s3://bucket/dump/``, :mod:`curate.storage`): the objects under the
prefix are listed as a local folder is walked (sorted by path, ``.``/``_`` names skipped), each
task reads a local copy; ``datasets`` folders are read from local paths only.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import field_validator

from curate import storage
from curate.config import StageConfig
from curate.errors import ConfigError
from curate.readers import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_MAX_RECORD_BYTES,
    RawRecord,
    arrow_schema,
    detect_format,
    error_kind,
    hf_data_files,
    hf_splits,
    is_hf_dataset,
    iter_records,
)
from curate.reasons import declare
from curate.schema import CORE_FIELDS, CORE_NAMES, REJECT_NAMES, domain_of, make_rejected, split_by_mask
from curate.shardio import sha256_file
from curate.stage import ShardResult, SourceStage
from stages.extract import doc_id

REASONS = declare("read", {
    "bad_json": "a JSONL line or JSON array element is not valid JSON",
    "bad_encoding": "a line is not valid UTF-8, or one of its strings holds an unpaired surrogate escape",
    "not_object": "a record is valid JSON but not an object",
    "too_long": "a line or array element is longer than max_record_bytes",
    "truncated": "the (compressed) file ends early; the row stands for the lost tail",
    "corrupt": "damaged data (compressed stream, Parquet row group, Arrow batch): the row stands for what was lost",
    "unreadable": "the input file or folder could not be opened or listed",
    "unknown_format": "a file in an input folder whose format the name does not tell (set `format` or `include`)",
    "missing_text": "the record has no text field, or it is null",
    "bad_text": "the text field is not a string",
    "empty_text": "the text is empty or only whitespace",
    "missing_id": "the mapped id field is absent, null or empty",
    "bad_id": "the mapped id field is neither a string nor an integer",
    "duplicate_id": "an earlier kept record of the same input has this id",
    "bad_field": "a mapped url / source / domain field or a keep column has a value of the wrong type",
})

PROVENANCE = (pa.field("input_file", pa.string()), pa.field("input_index", pa.int64()))
KEEP_TYPES: dict[str, pa.DataType | None] = {
    "auto": None,
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}
_RESERVED = set(CORE_NAMES) | set(REJECT_NAMES) | {f.name for f in PROVENANCE}
_MISSING = object()


class ColumnMap(StageConfig):
    """Input field for each core column (None: not in the input).

    ``id: None`` makes ids from the input path and record index; ``source: None`` gives
    every document ``default_source``; ``domain: None`` takes the URL's host.
    """

    text: str = "text"
    id: str | None = None
    url: str | None = None
    source: str | None = None
    domain: str | None = None


class ReadConfig(StageConfig):
    """Config of the read stage.

    Attributes:
        format: ``auto`` (from each file's name), or ``jsonl``, ``json``, ``parquet``,
            ``arrow``, ``hf`` for every input.
        columns: the column mapping (:class:`ColumnMap`).
        default_source: source category of documents without a mapped source value.
        keep_columns: more input fields kept as columns: ``{name: type}`` with type one of
            ``auto`` (the Parquet / Arrow column's own type; not for JSON inputs), ``string``,
            ``int64``, ``float64``, ``bool``, ``json`` (the value as JSON text); a list of
            names means ``auto`` for each. A value that does not fit the type rejects the
            record (``read.bad_field``); an absent one is null.
        include: glob patterns on file names inside input folders (default: every file;
            names starting with ``.`` or ``_`` are always skipped).
        max_record_bytes: longer JSON lines / elements are rejected as ``read.too_long``.
        batch_rows: rows per Parquet batch held in memory while reading.
    """

    format: Literal["auto", "jsonl", "json", "parquet", "arrow", "hf"] = "auto"
    columns: ColumnMap = ColumnMap()
    default_source: str = "web"
    keep_columns: dict[str, Literal["auto", "string", "int64", "float64", "bool", "json"]] = {}
    include: tuple[str, ...] = ()
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    batch_rows: int = DEFAULT_BATCH_ROWS

    @field_validator("keep_columns", mode="before")
    @classmethod
    def _names_mean_auto(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {name: "auto" for name in v}
        return v

    @field_validator("keep_columns")
    @classmethod
    def _not_reserved(cls, v: dict) -> dict:
        bad = sorted(set(v) & _RESERVED)
        if bad:
            raise ValueError(f"{', '.join(bad)}: reserved output column name(s); map core columns in `columns`")
        return v


def _get(value: dict, name: str) -> Any:
    """``value[name]``, else the dotted path ``a.b.c`` through nested dicts; _MISSING if absent."""
    if name in value:
        return value[name]
    cur: Any = value
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _field_type(schema: pa.Schema, name: str) -> pa.DataType | None:
    """Type of column ``name`` (or of the dotted path through struct columns); None if absent."""
    if name in schema.names:
        return schema.field(name).type
    parts = name.split(".")
    if parts[0] not in schema.names:
        return None
    t = schema.field(parts[0]).type
    for part in parts[1:]:
        if not pa.types.is_struct(t) or t.get_field_index(part) < 0:
            return None
        t = t.field(part).type
    return t


def _stringish(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_null(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _fits(t: pa.DataType, kind: str) -> bool:
    """Whether a column of type ``t`` can be kept as ``kind``."""
    if kind in ("auto", "json") or pa.types.is_null(t):
        return True
    if kind == "string":
        return _stringish(t)
    if kind == "int64":
        return pa.types.is_integer(t)
    if kind == "float64":
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    return pa.types.is_boolean(t)


def _keep_value(value: Any, kind: str) -> tuple[bool, Any]:
    """``(ok, converted)`` for a keep-column value of a JSON record."""
    if value is None or value is _MISSING:
        return True, None
    if kind == "json":
        return True, json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if kind == "string":
        return isinstance(value, str), value
    if kind == "bool":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, None
    if kind == "int64":
        return isinstance(value, int) and -(1 << 63) <= value < (1 << 63), value
    if kind == "float64":
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else None
    return True, value


class Read(SourceStage):
    name = "read"
    version = "1"
    Config = ReadConfig

    # -- inputs ---------------------------------------------------------------------------
    def list_inputs(self, paths: list[str]) -> list[str]:
        """Files (and ``datasets`` folders) under ``paths``, each real file once.

        Folders are walked in sorted order, following symlinks but entering each real
        folder once (no loops, no file read twice); hidden (``.``) and ``_`` names are
        skipped; a folder that cannot be listed becomes an input of its own (one
        ``read.unreadable`` row). Parquet / Arrow schemas are checked against the mapping.
        """
        out: list[Path] = []
        seen: set[str] = set()
        visited: set[str] = set()

        def add(p: Path) -> None:
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                out.append(p)

        def walk(d: Path) -> None:
            real = os.path.realpath(d)
            if real in visited:
                return
            visited.add(real)
            splits = hf_splits(d)
            if splits is not None:
                for s in splits:
                    add(s)
                return
            if is_hf_dataset(d):
                add(d)
                return
            try:
                names = sorted(e.name for e in os.scandir(d))
            except OSError:
                add(d)
                return
            for n in names:
                if n.startswith((".", "_")):
                    continue
                child = d / n
                if child.is_dir():
                    walk(child)
                elif not self.config.include or any(fnmatch.fnmatch(n, g) for g in self.config.include):
                    add(child)

        for p in paths:
            if storage.is_uri(p):
                for f in self._remote_inputs(p):
                    if f not in seen:
                        seen.add(f)
                        out.append(f)  # type: ignore[arg-type]
                continue
            path = Path(storage.local_path(p))
            if not path.exists() and not path.is_symlink():
                raise ConfigError(f"read input not found: {p}")
            if path.is_dir():
                walk(path)
            else:
                if self._format(path) is None:
                    raise ConfigError(f"read input {p}: the name does not tell its format; set `format:` "
                                      "(jsonl, json, parquet, arrow, hf)")
                add(path)
        first: tuple[Path, dict[str, pa.DataType]] | None = None
        for p in out:
            types = self._check_input(p)
            if not types:
                continue
            if first is None:
                first = (p, types)
            for col, t in types.items():
                if col in first[1] and first[1][col] != t:
                    raise ConfigError(f"read inputs {first[0]} and {p}: keep column {col!r} is {first[1][col]} in "
                                      f"one and {t} in the other; give it a type in keep_columns")
        return [str(p) for p in out]

    def _remote_inputs(self, uri: str) -> list[str]:
        """The object ``uri``, or the objects under the prefix ``uri`` that a local walk reads."""
        what = storage.kind(uri)
        if what is None:
            raise ConfigError(f"read input not found: {uri}")
        if what == "file":
            if self._format(uri) is None:
                raise ConfigError(f"read input {uri}: the name does not tell its format; set `format:` "
                                  "(jsonl, json, parquet, arrow, hf)")
            return [uri]
        base = uri.rstrip("/")
        out = []
        for f in storage.list_files(base):
            parts = f[len(base) + 1:].split("/")
            if any(n.startswith((".", "_")) for n in parts):
                continue
            if parts[-1] in ("state.json", "dataset_info.json"):
                raise ConfigError(f"read input {storage.parent_of(f)}: a datasets folder; datasets folders are "
                                  "read from local paths only (copy it to a local folder)")
            if not self.config.include or any(fnmatch.fnmatch(parts[-1], g) for g in self.config.include):
                out.append(f)
        return out

    def _format(self, path: Path | str) -> str | None:
        if storage.is_uri(path):
            return detect_format(storage.name_of(path)) if self.config.format == "auto" else self.config.format
        if Path(path).is_dir():
            return "hf"
        return detect_format(path) if self.config.format == "auto" else self.config.format

    def _check_input(self, path: Path) -> dict[str, pa.DataType]:
        """Check a columnar input's schema against the mapping; return the types of its
        ``auto`` keep columns. JSON inputs: refuse ``auto`` keep columns."""
        fmt = self._format(path)
        auto = [k for k, kind in self.config.keep_columns.items() if kind == "auto"]
        if fmt in ("jsonl", "json"):
            if auto:
                raise ConfigError(f"read input {path}: keep_columns {', '.join(auto)} need a type for JSON "
                                  f"inputs (one of {', '.join(k for k in KEEP_TYPES if k != 'auto')})")
            return {}
        if fmt is None:
            return {}
        if fmt == "hf" and (storage.is_uri(path) or not Path(path).is_dir()):
            raise ConfigError(f"read input {path}: format 'hf' reads folders written by datasets' save_to_disk; "
                              "use 'arrow' for a single .arrow file")
        try:
            if storage.is_uri(path):
                with storage.local_copy(str(path)) as local:
                    schema = arrow_schema(local)
            else:
                schema = arrow_schema(path)
        except (pa.ArrowException, OSError, ValueError, IndexError):
            return {}  # unreadable: the worker turns it into a rejected row
        cm = self.config.columns
        wanted = [("text", cm.text, "string")]
        wanted += [(k, getattr(cm, k), "string") for k in ("url", "source", "domain") if getattr(cm, k)]
        if cm.id:
            wanted.append(("id", cm.id, "id"))
        wanted += [(f"keep_columns.{k}", k, kind) for k, kind in self.config.keep_columns.items()]
        types: dict[str, pa.DataType] = {}
        for key, col, kind in wanted:
            t = _field_type(schema, col)
            if t is None:
                near = difflib.get_close_matches(col, schema.names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"read input {path}: no column {col!r} for `{key}` "
                                  f"(columns: {', '.join(schema.names)}{hint})")
            ok = (_stringish(t) or pa.types.is_integer(t)) if kind == "id" else _fits(t, kind)
            if not ok:
                need = {"id": "a string or integer", "string": "a string"}.get(kind, kind)
                raise ConfigError(f"read input {path}: column {col!r} (for `{key}`) is {t}, expected {need} column")
            if kind == "auto":
                types[col] = t.value_type if pa.types.is_dictionary(t) else t
        return types

    def checksum(self, path: str) -> str:
        """sha256 of the file; for a ``datasets`` folder, of its state and data files. An input
        that cannot be read gets a marker string (its rows say why)."""
        if storage.is_uri(path):
            return storage.sha256(path)
        p = Path(path)
        try:
            if not p.is_dir():
                return sha256_file(p)
            h = hashlib.sha256()
            extra = [p / n for n in ("state.json", "dataset_info.json") if (p / n).is_file()]
            for f in extra + hf_data_files(p):
                h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
            return h.hexdigest()
        except (OSError, ValueError) as e:
            return f"unreadable:{type(e).__name__}"

    # -- one input ----------------------------------------------------------------------------
    def _schema(self, auto_types: dict[str, pa.DataType]) -> pa.Schema:
        fields = list(CORE_FIELDS) + list(PROVENANCE)
        for col, kind in self.config.keep_columns.items():
            t = auto_types.get(col, pa.null()) if kind == "auto" else KEEP_TYPES[kind]
            fields.append(pa.field(col, t))
        return pa.schema(fields)

    def process_source(self, path: str) -> ShardResult:
        if storage.is_uri(path):
            with storage.local_copy(path) as local:
                return self._process(path, local)
        return self._process(path, Path(path))

    def _process(self, path: str, p: Path) -> ShardResult:
        """Read the local file ``p``; ``path`` is the input as the pipeline names it (ids)."""
        fmt = self._format(p)
        reasons: list[str | None] = []
        details: list[str | None] = []
        if fmt is None:
            auto_types: dict[str, pa.DataType] = {}
            records: Any = [RawRecord(0, None, f"unknown_format: {p.name}: the name does not tell its format")]
        else:
            auto_types = self._check_input(p)
            cm = self.config.columns
            wanted = [c for c in (cm.text, cm.id, cm.url, cm.source, cm.domain) if c] + list(self.config.keep_columns)
            records = iter_records(p, fmt, columns=wanted, max_record_bytes=self.config.max_record_bytes,
                                   batch_rows=self.config.batch_rows)
        schema = self._schema(auto_types)
        # Rows become Arrow batches every batch_rows records: Arrow holds text far more
        # compactly than Python strings (and a batch never nears the 2 GiB offset limit).
        batches: list[pa.RecordBatch] = []
        cols = {f.name: [] for f in schema}
        ids_kept: dict[str, int] = {}
        n = 0
        for rec in records:
            row, reason, detail = self._row(path, rec, ids_kept)
            for k, values in cols.items():
                values.append(row.get(k))
            reasons.append(reason)
            details.append(detail)
            n += 1
            if n % self.config.batch_rows == 0:
                batches.append(pa.RecordBatch.from_pydict(cols, schema=schema))
                cols = {f.name: [] for f in schema}
        batches.append(pa.RecordBatch.from_pydict(cols, schema=schema))
        table = pa.Table.from_batches(batches, schema=schema)
        kept, dropped = split_by_mask(table, [r is None for r in reasons])
        rejected = make_rejected(dropped, self.name, [r for r in reasons if r],
                                 [d for r, d in zip(reasons, details) if r])
        stats = {"records": n, f"format.{fmt or 'unknown'}": 1}
        return ShardResult(kept=kept, rejected=rejected, stats=stats, n_input=n)

    def _row(self, name: str, rec: RawRecord, ids_kept: dict[str, int]) -> tuple[dict, str | None, str | None]:
        """One output row and its reject reason (None: kept) and detail."""
        cfg = self.config
        cm = cfg.columns
        gen_id = doc_id(name, rec.index)
        row: dict[str, Any] = {"id": gen_id, "text": None, "url": None, "domain": "", "source": cfg.default_source,
                               "input_file": name, "input_index": rec.index}
        if rec.error is not None:
            return row, REASONS.get(rec.error.split(":", 1)[0]) or REASONS[error_kind(rec.error)], rec.error
        v = rec.value or {}
        problem: tuple[str, str] | None = None
        for col, kind in cfg.keep_columns.items():
            raw = _get(v, col)
            ok, conv = (True, None if raw is _MISSING else raw) if kind == "auto" else _keep_value(raw, kind)
            if ok:
                row[col] = conv
            elif problem is None:
                problem = ("read.bad_field", f"keep column {col!r}: expected {kind}, got {type(raw).__name__}")
        for key in ("url", "source", "domain"):
            col = getattr(cm, key)
            if not col:
                continue
            raw = _get(v, col)
            if raw is _MISSING or raw is None or raw == "":
                continue  # absent: null url, default_source, the URL's host
            if isinstance(raw, str):
                row[key] = raw
            elif problem is None:
                problem = ("read.bad_field", f"{key} field {col!r} is a {type(raw).__name__}, not a string")
        row["domain"] = row["domain"] or domain_of(row["url"])
        in_id: str | None = None
        if cm.id:
            raw = _get(v, cm.id)
            if raw is _MISSING or raw is None or raw == "":
                return row, "read.missing_id", f"id field {cm.id!r} is {'absent' if raw is _MISSING else repr(raw)}"
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                return row, "read.bad_id", f"id field {cm.id!r} is a {type(raw).__name__}"
            in_id = str(raw)
            row["id"] = in_id
        text = _get(v, cm.text)
        if text is _MISSING or text is None:
            return row, "read.missing_text", f"text field {cm.text!r} is {'absent' if text is _MISSING else 'null'}"
        if not isinstance(text, str):
            return row, "read.bad_text", f"text field {cm.text!r} is a {type(text).__name__}"
        row["text"] = text
        if not text.strip():
            return row, "read.empty_text", f"text of {len(text)} whitespace characters" if text else "empty text"
        if problem is not None:
            return row, problem[0], problem[1]
        if in_id is not None:
            first = ids_kept.get(in_id)
            if first is not None:
                row["id"] = gen_id
                return row, "read.duplicate_id", f"id {in_id!r} already kept from record {first}"
            ids_kept[in_id] = rec.index
        return row, None, None


STAGE = Read
