"""DuckDB over a run directory, read-only: one view per stage (kept shards), ``<stage>_rejected``,
``<stage>_<name>`` for any other top-level Parquet file of a stage (e.g. ``mix_sources``),
and ``funnel`` (stage, reason, docs) built from the stage manifests.

The views are Arrow datasets over the run's Parquet files, registered in an in-memory DuckDB
whose file system access is then switched off and its configuration locked: a query can read
the views but can neither read nor write any file (``COPY ... TO`` into the run fails), and it
cannot switch that back on. ``allow_write=DIR`` lets queries write (and read) under ``DIR``
only, which must lie outside the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from .errors import CurateError


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def _json(path: Path) -> dict:
    """A JSON object from ``path``, or {} when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stage_dirs(run_dir: Path) -> list[Path]:
    names = _json(run_dir / "_pipeline.json").get("stages", [])
    dirs = [run_dir / n for n in names if isinstance(n, str) and (run_dir / n).is_dir()]
    extra = sorted(d for d in run_dir.iterdir() if d.is_dir() and d not in dirs and (d / "_manifest.json").exists())
    return dirs + extra


def _dataset(files: list[Path]) -> pds.Dataset:
    """One dataset over ``files``, columns united by name (a column a file lacks reads as null)."""
    try:
        schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
        return pds.dataset([str(f) for f in files], schema=schema, format="parquet")
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"cannot read the Parquet files under {files[0].parent}: {e}") from None


def _lock(con: duckdb.DuckDBPyConnection, allow_write: Path | None) -> None:
    if allow_write is not None:
        con.execute("SET allowed_directories = ?", [[str(allow_write) + "/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _export_dir(run_dir: Path, allow_write: str | Path | None) -> Path | None:
    if allow_write is None:
        return None
    out = Path(allow_write).resolve()
    run = run_dir.resolve()
    if out == run or run in out.parents or out in run.parents:
        raise CurateError(f"--allow-write {allow_write}: must lie outside the run directory {run_dir} "
                          f"(and not contain it): the run stays read-only")
    if not out.is_dir():
        raise CurateError(f"--allow-write {allow_write}: not a directory")
    return out


def connect(run_dir: str | Path, allow_write: str | Path | None = None) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """A locked in-memory DuckDB connection with the run's views; returns (connection, view names).

    Args:
        run_dir: the run directory.
        allow_write: a directory outside the run where queries may write (exports); None: none.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CurateError(f"run directory not found: {run_dir}")
    export = _export_dir(run_dir, allow_write)
    con = duckdb.connect(":memory:")
    views: list[str] = []
    funnel_rows = []

    def add(name: str, files: list[Path]) -> None:
        con.register(name, _dataset(files))
        views.append(name)

    for d in stage_dirs(run_dir):
        name = _ident(d.name)
        if parts := sorted(d.glob("part-*.parquet")):
            add(name, parts)
        if rejected := sorted((d / "rejected").glob("*.parquet")):
            add(f"{name}_rejected", rejected)
        for f in sorted(d.glob("*.parquet")):
            if not f.name.startswith("part-"):
                add(f"{name}_{_ident(f.stem)}", [f])
        m = _json(d / "_manifest.json")
        if "input_rows" in m:
            funnel_rows.append((d.name, "(input)", m["input_rows"]))
            funnel_rows.append((d.name, "(kept)", m.get("kept_rows")))
            for reason, n in sorted(m.get("reasons", {}).items()):
                funnel_rows.append((d.name, reason, n))
    con.execute("CREATE TABLE funnel (stage VARCHAR, reason VARCHAR, docs BIGINT)")
    if funnel_rows:
        con.executemany("INSERT INTO funnel VALUES (?, ?, ?)", funnel_rows)
    views.append("funnel")
    _lock(con, export)
    return con, views


def query(run_dir: str | Path, sql: str, allow_write: str | Path | None = None):
    """Run ``sql`` against a run (read-only; writes only under ``allow_write``); returns
    (column names, rows)."""
    con, views = connect(run_dir, allow_write)
    try:
        cur = con.execute(sql)
        cols = [c[0] for c in cur.description] if cur.description else []
        return cols, cur.fetchall()
    except duckdb.PermissionException as e:
        hint = ("curate sql reads only its views; pass --allow-write DIR (outside the run) to write exports there"
                if allow_write is None else f"files can be written and read only under {allow_write}")
        raise CurateError(f"SQL error: {e} ({hint})") from None
    except duckdb.Error as e:
        quoted = ", ".join(v if v.isidentifier() else f'"{v}"' for v in views)
        raise CurateError(f"SQL error: {e}\nviews in this run: {quoted}") from None
    finally:
        con.close()
