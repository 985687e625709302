"""The report's sample documents: a few rejected documents for each stage's top reasons, so a
reader can judge each rule. Excerpts of documents rejected before the pii stage ran are scrubbed
with the run's own PII settings for display (nothing in the run is changed)."""

from __future__ import annotations

import html
from collections import defaultdict

from .reasons import load_builtins, meaning
from .report_data import Run, StageView, parquet_source, sql_str
from .report_sections import Section, n

SAMPLES_PER_REASON = 3
SAMPLE_CHARS = 400


def _scrubber(run: Run):
    from filters.pii import Scrubber

    cfg = ((run.first("pii") or StageView("", run.dir)).manifest or {}).get("config") or {}
    kw = {k: cfg[k] for k in ("types", "phone_regions") if k in cfg}
    return Scrubber(policy="placeholder", **kw)


def samples(run: Run) -> Section | str:
    """A few rejected documents for each of the top reasons of every stage that rejected any."""
    load_builtins()
    pii_stage = run.first("pii")
    pii_at = run.index(pii_stage) if pii_stage and pii_stage.finished else None
    scrubber = None
    blocks = []
    for s in run.document_stages:
        c = s.counts
        if not c or not c["rejected"] or not s.rejected_files:
            continue
        cols = run.columns(s.rejected_files)
        if "reason" not in cols:
            continue
        top = [r for r, _ in sorted(c["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
        pick = ", ".join(x if x in cols else f"NULL AS {x}" for x in ("id", "url", "source", "lang", "detail", "text"))
        order = "id" if "id" in cols else "url"
        rows = run.rows(
            f"SELECT reason, {pick} FROM (SELECT *, row_number() OVER (PARTITION BY reason ORDER BY {order}) AS k "
            f"FROM {parquet_source(s.rejected_files)} WHERE reason IN ({', '.join(sql_str(r) for r in top)})) "
            f"WHERE k <= {SAMPLES_PER_REASON} ORDER BY reason, k")
        before_pii = pii_at is None or run.index(s) < pii_at
        label = "kept twin" if s.type == "dedup" else "detail"
        grouped_rows = defaultdict(list)
        for r in rows:
            grouped_rows[r[0]].append(r[1:])
        for reason in top:
            items = []
            for doc_id, url, source, lang, detail, text in grouped_rows.get(reason, []):
                excerpt = (text or "")[: SAMPLE_CHARS * 2]
                if excerpt and before_pii:
                    scrubber = scrubber or _scrubber(run)
                    excerpt = scrubber.scrub(excerpt, doc_id or "").text
                cut = len(text or "") > SAMPLE_CHARS
                excerpt = excerpt[:SAMPLE_CHARS] + ("…" if cut else "")
                meta = " · ".join(str(x) for x in (url, source, lang) if x)
                items.append(
                    f"<div class=\"doc\"><div class=\"meta\">{html.escape(meta)}"
                    + (f"<br>{label}: {html.escape(str(detail)[:200])}" if detail else "")
                    + ("" if excerpt else " (no text)") + "</div>"
                    + (f"<pre>{html.escape(excerpt)}</pre>" if excerpt else "") + "</div>")
            note = " (excerpts scrubbed for this report: this stage ran before pii)" if before_pii else ""
            what = meaning(reason)
            blocks.append(f"<h3>{html.escape(reason)} <small>{n(c['reasons'][reason])} documents, "
                          f"stage {html.escape(s.name)}{html.escape(note)}</small></h3>"
                          + (f"<p class=\"meaning\">{html.escape(what)}</p>" if what else "") + "".join(items))
    if not blocks:
        return "no rejected documents to show"
    sec = Section("samples", "Sample rejected documents",
                  intro=f"Up to {SAMPLES_PER_REASON} documents (lowest ids) for each stage's top 3 reasons, "
                        f"first {SAMPLE_CHARS} characters. Text that reached the pii stage is shown as it scrubbed it; "
                        "excerpts from stages before it are scrubbed here with placeholders.")
    sec.tables.extend(blocks)
    return sec

