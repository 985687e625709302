"""The ``curate`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import CurateError, TaskError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Corpus curation pipeline for LLM training.")
console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


def _local_run(run_dir: str) -> Path:
    """The local folder of a run: the path itself, or for a storage URI (``s3://...``) its
    mirror after pulling the run (curate.storage; a CurateError when it cannot be read)."""
    from .storage import local_run

    return local_run(run_dir)


def _fail(e: Exception, log: Path | None = None) -> None:
    """One line on stderr (never wrapped, the message is not read as markup), exit code 2."""
    line = Text.assemble(("error:", "bold red"), f" {e}", f" (full traceback: {log})" if log else "")
    err_console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="pipeline YAML (see manifests/)"),
    run_dir: str = typer.Option(..., "--run", help="run directory, e.g. runs/demo, or a storage URI (s3://bucket/run)"),
    executor: Optional[str] = typer.Option(None, help="ray (default in the YAML) or local"),
    workers: Optional[int] = typer.Option(None, help="number of workers"),
    stage: Optional[list[str]] = typer.Option(None, "--stage", help="run only these stages (repeatable)"),
    force: bool = typer.Option(False, help="redo stages whose config or input changed"),
    max_task_retries: Optional[int] = typer.Option(
        None, help="reruns of a task whose Ray worker or node was lost (default: the YAML's max_task_retries, 3; "
                   "or CURATE_MAX_TASK_RETRIES)"),
):
    """Run (or resume) a pipeline into a run directory.

    A failing task is reported as one line (stage, task, input file, record when known);
    its full traceback goes to ``RUN/_logs/``.
    """
    from .runner import run_pipeline

    if max_task_retries is not None:
        os.environ["CURATE_MAX_TASK_RETRIES"] = str(max_task_retries)
    try:
        run_pipeline(pipeline, run_dir, executor=executor, workers=workers, stages=stage or None, force=force,
                     log=lambda m: console.print(m, highlight=False, markup=False))
    except TaskError as e:
        from .storage import open_run

        store = open_run(run_dir)
        log = e.write_log(store.local)
        store.push([log])
        _fail(e, log)
    except CurateError as e:
        _fail(e)
    inspect(run_dir, top=5)
    where = run_dir if "://" in run_dir else Path(run_dir).resolve()
    console.print(f"outputs: {where}  (query: curate sql \"SELECT ...\" --run {run_dir})")


@app.command()
def validate(
    pipeline: Path = typer.Argument(..., help="pipeline YAML (see manifests/)"),
):
    """Check a whole pipeline without running anything: stage types, every stage's config,
    inputs, references between stages, cycles and input paths."""
    from .config import load_pipeline
    from .pipeline import check_paths
    from .pipeline import validate as validate_pipeline

    try:
        spec = load_pipeline(pipeline)
        plan = validate_pipeline(spec, str(pipeline))
        check_paths(plan, str(pipeline))
    except CurateError as e:
        _fail(e)
    order = " -> ".join(f"{p.name} ({p.type})" if p.type != p.name else p.name for p in plan)
    console.print(f"ok: {pipeline}: {len(plan)} stages: {order}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def reasons(
    markdown: bool = typer.Option(False, "--markdown", help="the docs table (docs/REASONS.md)"),
):
    """List every reject reason code with its meaning (the reason registry)."""
    from . import reasons as registry

    if markdown:
        sys.stdout.write(registry.markdown())
        return
    t = Table("code", "meaning", "declared in", title="reject reasons")
    for code, (text, origin) in registry.registry().items():
        t.add_row(code, text, origin)
    console.print(t)


@app.command()
def sql(
    query_text: str = typer.Argument(..., metavar="SQL"),
    run_dir: str = typer.Option(..., "--run", help="run directory (or storage URI)"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    allow_write: Optional[Path] = typer.Option(
        None, "--allow-write", help="a directory outside the run where COPY ... TO may write (default: none)"),
):
    """Run DuckDB SQL over a run: one view per stage, <stage>_rejected, and funnel.

    Read-only: queries see only the views (view names with odd characters need "double quotes")
    and cannot read or write files, except under --allow-write DIR.
    """
    from .sql import query

    try:
        cols, rows = query(_local_run(run_dir), query_text, allow_write=allow_write)
    except CurateError as e:
        _fail(e)
    if fmt == "json":
        for r in rows:
            print(json.dumps(dict(zip(cols, r)), default=str, ensure_ascii=False))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        t = Table(*cols)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        console.print(t)


@app.command()
def inspect(
    run_dir: str = typer.Argument(..., help="run directory (or storage URI)"),
    top: int = typer.Option(5, help="reject reasons shown per stage (the rest are summed)"),
):
    """Print the funnel: documents in, kept and rejected by reason, and what each stage did."""
    from .report_data import load_run
    from .report_summary import stage_summary

    try:
        run = load_run(_local_run(run_dir))
    except CurateError as e:
        _fail(e)
    t = Table("stage", "in", "kept", "rejected", "by reason", "what it did", "s", "docs/s", title=f"funnel: {run_dir}")
    t.columns[4].overflow = t.columns[5].overflow = "fold"
    for s in run.stages:
        c, m = s.counts, s.manifest or {}
        did = stage_summary(s)
        if not did and not c and isinstance(m.get("accounting"), str):
            did = [m["accounting"][:200]]
        if not s.finished:
            did.insert(0, f"({s.state})")
        reasons = ""
        if c:
            ranked = sorted(c["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
            reasons = "\n".join(f"{k}: {v}" for k, v in ranked[:top])
            if len(ranked) > top:
                rest = sum(v for _, v in ranked[top:])
                reasons += f"\n(+{len(ranked) - top} more reasons: {rest})"
        tm = m.get("timings", {})
        t.add_row(s.name, *(str(c[k]) if c else "" for k in ("input", "kept", "rejected")), reasons, "\n".join(did),
                  str(tm.get("seconds", "")), str(tm.get("docs_per_s", "")))
    for name in run.not_started:
        t.add_row(name, "", "", "", "", "(not started)", "", "")
    console.print(t)


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="run directory (finished or not; or storage URI: read from its mirror)"),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default RUN/report.html)"),
):
    """Write one self-contained HTML page with the run as charts (read from what the run wrote)."""
    from .report import build_report

    try:
        path, info = build_report(_local_run(run_dir), out)
    except CurateError as e:
        _fail(e)
    skipped = f"; not in this run: {', '.join(info['absent'])}" if info["absent"] else ""
    console.print(f"{info['charts']} charts in {len(info['sections'])} sections, {info['seconds']} s{skipped}",
                  highlight=False, markup=False)
    console.print(f"report: {path.resolve()}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="run directory (or storage URI: read from its mirror)"),
    stage: str = typer.Argument(..., help="stage name"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl, parquet or messages (chat JSONL)"),
    columns: Optional[str] = typer.Option(None, help="comma-separated columns (default: all)"),
    rejected: bool = typer.Option(False, "--rejected", help="export the rejected rows instead"),
    out: Optional[str] = typer.Option(None, help="output file, '-' for stdout (default RUN/exports/...)"),
):
    """Write a stage's kept (or rejected) documents as JSONL, Parquet or chat messages."""
    from .export import export_stage

    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    try:
        res = export_stage(_local_run(run_dir), stage, fmt=fmt, columns=cols, rejected=rejected, out=out)
    except CurateError as e:
        _fail(e)
    if res["path"] != "-":
        err_console.print(f"{res['rows']} rows -> {res['path']}", highlight=False, markup=False)


@app.command()
def verify(
    run_dir: Path = typer.Argument(..., help="run directory (or one mixture directory)"),
    out: Optional[Path] = typer.Option(None, "--out", help="reports and the short training run (default RUN/verify)"),
    train_steps: int = typer.Option(60, help="steps of the training check (0 skips it)"),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)"),
):
    """Check a run's mixtures before training: files, tokenizer, proportions, overlap, SFT masks, a short run."""
    from trainer.data import DataError
    from trainer.verify import VerifyOptions, format_checks
    from trainer.verify import verify as verify_run

    try:
        res = verify_run(run_dir, out, VerifyOptions(train_steps=train_steps, threads=threads),
                         log=lambda m: console.print(m, highlight=False, markup=False))
    except (DataError, OSError, ValueError) as e:
        _fail(e)
    for line in format_checks(res):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if not all(c.ok for checks in res.values() for c in checks):
        raise typer.Exit(1)


@app.command("sample-corpus")
def sample_corpus(
    out_dir: Path = typer.Argument(..., help="where to write the WARC shards"),
    seed: int = typer.Option(0),
    shards: int = typer.Option(6),
    scale: float = typer.Option(1.0),
):
    """Generate the deterministic sample crawl (WARC) used by the demo and the tests."""
    from samples.samplegen import generate

    summary = generate(out_dir, seed=seed, shards=shards, scale=scale)
    console.print(summary)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
