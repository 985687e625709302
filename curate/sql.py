"""DuckDB over a run directory: one view per stage (kept shards), ``<stage>_rejected``,
``<stage>_<name>`` for any other top-level Parquet file of a stage (e.g. ``mix_sources``),
and ``funnel`` (stage, reason, docs) built from the stage manifests."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from .errors import CurateError


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def stage_dirs(run_dir: Path) -> list[Path]:
    order_file = run_dir / "_pipeline.json"
    names: list[str] = []
    if order_file.exists():
        names = json.loads(order_file.read_text()).get("stages", [])
    dirs = [run_dir / n for n in names if (run_dir / n).is_dir()]
    extra = sorted(d for d in run_dir.iterdir() if d.is_dir() and d not in dirs and (d / "_manifest.json").exists())
    return dirs + extra


def connect(run_dir: str | Path) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB connection with the run's views; returns (connection, view names)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CurateError(f"run directory not found: {run_dir}")
    con = duckdb.connect()
    views: list[str] = []
    funnel_rows = []
    for d in stage_dirs(run_dir):
        name = _ident(d.name)
        if list(d.glob("part-*.parquet")):
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_lit(d / 'part-*.parquet')}, union_by_name=true)"
            )
            views.append(name)
        if list((d / "rejected").glob("*.parquet")):
            con.execute(
                f"CREATE VIEW {name}_rejected AS SELECT * FROM "
                f"read_parquet({_lit(d / 'rejected' / '*.parquet')}, union_by_name=true)"
            )
            views.append(f"{name}_rejected")
        for f in sorted(d.glob("*.parquet")):
            if not f.name.startswith("part-"):
                v = f"{name}_{_ident(f.stem)}"
                con.execute(f"CREATE VIEW {v} AS SELECT * FROM read_parquet({_lit(f)})")
                views.append(v)
        man = d / "_manifest.json"
        if man.exists():
            m = json.loads(man.read_text())
            if "input_rows" in m:
                funnel_rows.append((d.name, "(input)", m["input_rows"]))
                funnel_rows.append((d.name, "(kept)", m["kept_rows"]))
                for reason, n in sorted(m.get("reasons", {}).items()):
                    funnel_rows.append((d.name, reason, n))
    con.execute("CREATE TABLE funnel (stage VARCHAR, reason VARCHAR, docs BIGINT)")
    if funnel_rows:
        con.executemany("INSERT INTO funnel VALUES (?, ?, ?)", funnel_rows)
    views.append("funnel")
    return con, views


def query(run_dir: str | Path, sql: str):
    """Run ``sql`` against a run; returns (column names, rows)."""
    con, views = connect(run_dir)
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        raise CurateError(f"SQL error: {e}\nviews in this run: {', '.join(views)}") from None
    cols = [c[0] for c in cur.description] if cur.description else []
    return cols, cur.fetchall()
