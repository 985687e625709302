"""``curate report RUN``: one self-contained HTML page with the run as charts.

The page holds every image inline (base64 PNG drawn with matplotlib), needs no script and no
network, and reads only what the run wrote (see :mod:`curate.report_data`), so it works on a
finished run and on one that is still going or stopped half-way. Sections that a run has no
data for are listed at the end with the reason.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from pathlib import Path

from . import report_outputs, report_samples, report_sections
from .report_data import Run, load_run
from .report_sections import Section
from .shardio import atomic_write_bytes

SECTIONS: list[tuple[str, Callable[[Run], Section | str]]] = [
    ("Stages", report_sections.overview),
    ("Funnel", report_sections.funnel),
    ("Rejections", report_sections.rejections),
    ("Languages", report_sections.languages),
    ("Quality rules", report_sections.quality),
    ("Perplexity", report_sections.perplexity),
    ("Deduplication", report_sections.dedup),
    ("PII", report_sections.pii),
    ("Pretraining mixture", report_outputs.mixture),
    ("SFT mixture", report_outputs.sft),
    ("Vocabulary extension", report_outputs.vocab),
    ("Training, verification and ablations", report_outputs.training),
    ("Sample rejected documents", report_samples.samples),
]

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 880px; padding: 1em 1.5em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 small { color: #666; font-weight: normal; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.95em; color: #333; } figcaption b { display: block; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
td, th { border: 1px solid #ddd; padding: 3px 6px; vertical-align: top; text-align: left; }
td.num { text-align: right; white-space: nowrap; } th { background: #f4f4f4; }
#stages td:nth-child(-n+2) { white-space: nowrap; } .meaning { color: #444; margin: 0.2em 0; font-style: italic; }
.doc { border-left: 3px solid #e15759; margin: 0.6em 0; padding-left: 0.6em; }
.doc .meta { color: #555; font-size: 0.85em; word-break: break-all; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #fafafa; padding: 0.4em; margin: 0.2em 0;
      font-size: 0.85em; max-height: 12em; overflow: auto; }
nav a { margin-right: 0.8em; } .absent li { color: #555; }
"""


def _section_html(sec: Section) -> str:
    parts = [f'<section id="{sec.key}"><h2>{html.escape(sec.title)}</h2>']
    if sec.intro:
        parts.append(f"<p>{html.escape(sec.intro)}</p>")
    for c in sec.charts:
        b64 = base64.b64encode(c.png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(c.title)}">'
                     f"<figcaption><b>{html.escape(c.title)}</b>{html.escape(c.reading)}</figcaption></figure>")
    parts.extend(sec.tables)
    parts.append("</section>")
    return "\n".join(parts)


def render(run: Run) -> tuple[str, list[Section], list[tuple[str, str]]]:
    """The page's HTML, the sections shown and ``(title, reason)`` for those skipped."""
    shown: list[Section] = []
    absent: list[tuple[str, str]] = []
    for title, fn in SECTIONS:
        out = fn(run)
        if isinstance(out, Section):
            shown.append(out)
        else:
            absent.append((title, out))
    name = run.pipeline.get("pipeline") or run.dir.name
    finished = sum(s.finished for s in run.stages)
    total = len(run.stages) + len(run.not_started)
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in shown)
    body = "\n".join(_section_html(s) for s in shown)
    gone = "".join(f"<li><b>{html.escape(t)}</b>: {html.escape(why)}</li>" for t, why in absent)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>curate report: {html.escape(name)}</title>
<link rel="icon" href="data:,"><style>{CSS}</style></head>
<body><h1>curate report: {html.escape(name)}</h1>
<p>Run directory <code>{html.escape(str(run.dir.resolve()))}</code>: {finished} of {total} stages finished.
Every figure below is read from the files the run wrote (manifests, shards, token-shard metadata).</p>
<nav>{nav}</nav>
{body}
{f'<section id="absent" class="absent"><h2>Not in this run</h2><ul>{gone}</ul></section>' if absent else ''}
</body></html>
"""
    return page, shown, absent


def build_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, dict]:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``).

    Returns the path and a summary: ``sections`` shown, ``absent`` (title -> reason),
    ``charts`` (count) and ``seconds``.
    """
    t0 = time.perf_counter()
    run = load_run(run_dir)
    page, shown, absent = render(run)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path, {"sections": [s.title for s in shown], "absent": dict(absent),
                  "charts": sum(len(s.charts) for s in shown), "seconds": round(time.perf_counter() - t0, 2)}
