"""What a run wrote, read back for the report and ``curate inspect``.

Everything here reads files a run already holds (stage manifests through
:func:`curate.manifest.read_manifest`, per-shard markers of a stage still running, Parquet
shards through DuckDB, the JSON and array files of the token-shard contracts); nothing
recomputes a stage. A run may be partly finished: a stage without a manifest is summed from
the markers of the shards it has finished, and a stage that has not started is listed as such.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from .errors import CurateError
from .manifest import MANIFEST, SHARDS_DIR, SUCCESS, read_manifest

#: Formats of the JSON files that mark a stage's non-document outputs (see docs/ARCHITECTURE.md).
MIXTURE_FORMAT = "curate-mixture/1"
SFT_FORMAT = "curate-sft/1"
VOCAB_FORMAT = "curate-vocab/1"


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when the file is absent or not JSON (a file being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def sql_str(value: str | Path) -> str:
    """``value`` as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def parquet_source(files: list[Path]) -> str:
    """A DuckDB table expression over ``files`` (columns unioned by name)."""
    return f"read_parquet([{', '.join(sql_str(f) for f in files)}], union_by_name=true)"


@dataclass
class StageView:
    """One stage directory of a run, as its files describe it."""

    name: str
    dir: Path
    manifest: dict[str, Any] | None = None
    partial: dict[str, Any] | None = None  # summed shard markers of a stage without a manifest

    @property
    def type(self) -> str:
        return str((self.manifest or {}).get("type") or self.name)

    @property
    def finished(self) -> bool:
        return self.manifest is not None and (self.dir / SUCCESS).exists()

    @property
    def state(self) -> str:
        if self.finished:
            return "finished"
        if self.manifest is not None:
            return "manifest without _SUCCESS"
        if self.partial is not None:
            return f"running: {self.partial['shards']} shards done"
        return "started, nothing finished"

    def _done(self, files: list[Path]) -> list[Path]:
        """``files`` of a finished stage; of a running one, those its shard markers list."""
        if self.manifest is not None or self.partial is None:
            return files
        listed = self.partial["files"]
        return [f for f in files if str(f.relative_to(self.dir)) in listed]

    @cached_property
    def kept_files(self) -> list[Path]:
        return self._done(sorted(self.dir.glob("part-*.parquet")))

    @cached_property
    def rejected_files(self) -> list[Path]:
        return self._done(sorted((self.dir / "rejected").glob("*.parquet")))

    @property
    def counts(self) -> dict[str, Any] | None:
        """``{input, kept, rejected, reasons}`` of a document stage (None for a stage without)."""
        m = self.manifest if self.manifest is not None else self.partial
        if not m or "input_rows" not in m:
            return None
        if m.get("conservation") == "n/a" and not m.get("kept_rows") and not m.get("rejected_rows"):
            return None  # a stage whose output is not documents (train-lm, vocab): nothing to count
        return {"input": int(m["input_rows"]), "kept": int(m.get("kept_rows", 0)),
                "rejected": int(m.get("rejected_rows", 0)), "reasons": dict(m.get("reasons") or {})}

    @property
    def stats(self) -> dict[str, Any]:
        m = self.manifest if self.manifest is not None else self.partial
        return dict((m or {}).get("stats") or {})

    def json_file(self, name: str, fmt: str | None = None) -> dict[str, Any] | None:
        """``<stage dir>/<name>`` when it is a JSON object (of format ``fmt`` when given)."""
        data = read_json(self.dir / name)
        if not isinstance(data, dict) or (fmt is not None and data.get("format") != fmt):
            return None
        return data


def _sum_markers(stage_dir: Path) -> dict[str, Any] | None:
    """Sum the per-shard markers of a stage that has not written its manifest yet."""
    markers = [read_json(p) for p in sorted((stage_dir / SHARDS_DIR).glob("*.json"))]
    # a phase-engine marker holds the shard's marker body under "result"
    markers = [m.get("result", m) if isinstance(m, dict) else None for m in markers]
    markers = [m for m in markers if isinstance(m, dict) and "kept" in m]
    if not markers:
        return None
    reasons: Counter = Counter()
    stats: Counter = Counter()
    n_in = 0
    files: set[str] = set()
    for m in markers:
        for f in list(m.get("files") or []) + list((m.get("outputs") or {}).values()):
            if isinstance(f, dict) and f.get("path"):
                p = Path(f["path"])  # absolute, or relative to the stage or the working directory
                files.add(f"rejected/{p.name}" if p.parent.name == "rejected" else p.name)
        reasons.update(m.get("reasons") or {})
        for k, v in (m.get("stats") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                stats[k] += v
        inp = m.get("input_rows", m.get("input"))
        n_in += int(inp.get("rows", 0) if isinstance(inp, dict) else inp or 0)
    return {"shards": len(markers), "input_rows": n_in, "kept_rows": sum(int(m["kept"]) for m in markers),
            "rejected_rows": sum(int(m.get("rejected", 0)) for m in markers),
            "reasons": dict(reasons), "stats": dict(stats), "files": files}


@dataclass
class Run:
    """A run directory: its stages in pipeline order and a DuckDB connection to read shards."""

    dir: Path
    pipeline: dict[str, Any]
    stages: list[StageView]
    not_started: list[str] = field(default_factory=list)

    @cached_property
    def con(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect()

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def columns(self, files: list[Path]) -> set[str]:
        """Column names over ``files`` (the union; empty when there are no files)."""
        if not files:
            return set()
        return {r[0] for r in self.rows(f"DESCRIBE SELECT * FROM {parquet_source(files)}")}

    def of_type(self, *types: str) -> list[StageView]:
        return [s for s in self.stages if s.type in types]

    def first(self, *types: str) -> StageView | None:
        found = self.of_type(*types)
        return found[0] if found else None

    def index(self, stage: StageView) -> int:
        return self.stages.index(stage)

    @property
    def document_stages(self) -> list[StageView]:
        """Stages that account for documents (input = kept + rejected), in pipeline order."""
        return [s for s in self.stages if s.counts is not None]


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory's stage list and manifests (a missing run is a CurateError)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CurateError(f"run directory not found: {run_dir}")
    pipeline = read_json(run_dir / "_pipeline.json") or {}
    names = [str(n) for n in pipeline.get("stages", [])]
    present = [n for n in names if (run_dir / n).is_dir()]
    extra = sorted(d.name for d in run_dir.iterdir()
                   if d.is_dir() and d.name not in present and (d / MANIFEST).exists())
    stages = []
    for n in present + extra:
        d = run_dir / n
        m = read_manifest(d) if (d / MANIFEST).exists() else None
        stages.append(StageView(n, d, m, None if m is not None else _sum_markers(d)))
    if not stages:
        raise CurateError(f"{run_dir}: no stage directories (is this a run directory?)")
    return Run(run_dir, pipeline, stages, [n for n in names if n not in present])
