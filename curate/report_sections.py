"""The report's document sections: funnel, rejections, languages, quality, perplexity, dedup
and PII (the sample documents are in :mod:`curate.report_samples`).

Each section function takes a :class:`curate.report_data.Run` and returns a :class:`Section`,
or a string saying why the run has nothing for it (the report lists those at the end). Every
chart's one-line reading is computed from the same numbers the chart draws.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import report_charts as ch
from .report_data import Run, StageView, parquet_source, sql_str
from .report_summary import stage_summary

MB = 1e6
BEFORE_LANGID = "(before langid)"
MAX_LANGS = 16  # bars in the language chart; the rest are summed as "other"


@dataclass
class Chart:
    title: str
    png: bytes
    reading: str


@dataclass
class Section:
    key: str
    title: str
    charts: list[Chart] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    intro: str = ""


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def n(x: float) -> str:
    return f"{int(round(x)):,}"


def num3(x: float) -> str:
    """A figure with about three significant digits (whole numbers from 100 on)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped, a list in a cell becomes lines."""
    def cell(v, i):
        text = "<br>".join(html.escape(str(x)) for x in v) if isinstance(v, list) else html.escape(str(v))
        cls = ' class="num"' if i >= numeric_from and not isinstance(v, list) else ""
        return f"<td{cls}>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v, i) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------- overview and funnel


def overview(run: Run) -> Section:
    rows = []
    for s in run.stages:
        c = s.counts
        secs = ((s.manifest or {}).get("timings") or {}).get("seconds", "")
        rows.append([s.name, s.type, s.state, n(c["input"]) if c else "", n(c["kept"]) if c else "",
                     n(c["rejected"]) if c else "", secs, stage_summary(s) or ["—"]])
    for name in run.not_started:
        rows.append([name, "", "not started", "", "", "", "", ["—"]])
    sec = Section("stages", "Stages")
    sec.tables.append(table(["stage", "type", "state", "in", "kept", "rejected", "seconds", "what it did"], rows,
                            numeric_from=3))
    return sec


def _text_bytes(run: Run, stage: StageView) -> tuple[float, float] | None:
    """UTF-8 bytes of ``text`` in the stage's kept and rejected shards (None without a text column)."""
    out = []
    for files in (stage.kept_files, stage.rejected_files):
        if not files:
            out.append(0.0)
            continue
        if "text" not in run.columns(files):
            return None
        out.append(float(run.rows(f"SELECT coalesce(sum(strlen(text)), 0) FROM {parquet_source(files)}")[0][0]))
    return out[0], out[1]


def funnel(run: Run) -> Section | str:
    stages = [s for s in run.document_stages]
    if not stages:
        return "no stage has accounted for documents yet"
    names = [s.name for s in stages]
    kept = [s.counts["kept"] for s in stages]
    rej = [s.counts["rejected"] for s in stages]
    sec = Section("funnel", "Funnel")
    first, last = stages[0], stages[-1]
    worst = max(stages, key=lambda s: (s.counts["rejected"], -run.index(s)))
    reading = (f"{n(first.counts['input'])} records enter {first.name}; {n(last.counts['kept'])} documents "
               f"({pct(last.counts['kept'], first.counts['input'])}) leave {last.name}. {worst.name} removes the "
               f"most: {n(worst.counts['rejected'])} ({pct(worst.counts['rejected'], worst.counts['input'])} of its "
               "input).")
    sec.charts.append(Chart("Documents per stage", ch.funnel(names, kept, rej, "Documents per stage", "documents"),
                            reading))
    sizes = [(s, _text_bytes(run, s)) for s in stages if s.kept_files]
    sizes = [(s, b) for s, b in sizes if b is not None]
    if sizes:
        bk = [b[0] / MB for _, b in sizes]
        br = [b[1] / MB for _, b in sizes]
        s0, s1 = sizes[0][0], sizes[-1][0]
        reading = (f"Main text shrinks from {bk[0] + br[0]:,.2f} MB entering {s0.name} to {bk[-1]:,.2f} MB kept by "
                   f"{s1.name} ({pct(bk[-1], bk[0] + br[0])} of the bytes, against "
                   f"{pct(s1.counts['kept'], s0.counts['input'])} of the documents).")
        tokens = _train_tokens(run)
        if tokens:
            reading += " " + "; ".join(f"{name} packs {n(t)} train tokens" for name, t in tokens) + "."
        sec.charts.append(Chart("Text per stage", ch.funnel([s.name for s, _ in sizes], bk, br, "Text per stage",
                                                            "MB of UTF-8 text"), reading))
    return sec


def _train_tokens(run: Run) -> list[tuple[str, int]]:
    out = []
    for s in run.stages:
        meta = s.json_file("meta.json")
        tokens = ((meta or {}).get("train") or {}).get("tokens")
        if isinstance(tokens, int):
            out.append((s.name, tokens))
    return out


# ---------------------------------------------------------------- rejections


def _rejected_groups(run: Run) -> list[tuple[str, str, str, str, int]]:
    """(stage, reason, source, lang, documents) over every stage's rejected shards."""
    out = []
    for s in run.document_stages:
        if not s.rejected_files:
            continue
        cols = run.columns(s.rejected_files)
        if "reason" not in cols:
            continue
        src = "coalesce(source, '(none)')" if "source" in cols else "'(none)'"
        lang = "coalesce(lang, '(none)')" if "lang" in cols else f"'{BEFORE_LANGID}'"
        for reason, source, lg, cnt in run.rows(
                f"SELECT reason, {src}, {lang}, count(*) FROM {parquet_source(s.rejected_files)} GROUP BY ALL"):
            out.append((s.name, reason, source, lg, int(cnt)))
    return out


def _matrix(groups, key_row, key_col, rows, cols) -> np.ndarray:
    m = np.zeros((len(rows), len(cols)))
    ri = {r: i for i, r in enumerate(rows)}
    ci = {c: j for j, c in enumerate(cols)}
    for g in groups:
        r, c = key_row(g), key_col(g)
        if r in ri and c in ci:
            m[ri[r], ci[c]] += g[4]
    return m


def _top_cols(counter: Counter, k: int) -> list[str]:
    ranked = [c for c, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ranked[:k]


def rejections(run: Run) -> Section | str:
    groups = _rejected_groups(run)
    total = sum(g[4] for g in groups)
    if not total:
        return "no document was rejected"
    sec = Section("rejections", "Rejections")
    by_reason: Counter = Counter()
    stage_of: dict[str, str] = {}
    for g in groups:
        by_reason[g[1]] += g[4]
        stage_of.setdefault(g[1], g[0])
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:20]
    labels = [r for r, _ in top]
    values = [v for _, v in top]
    if len(ranked) > 20:
        labels.append(f"{len(ranked) - 20} more reasons")
        values.append(sum(v for _, v in ranked[20:]))
    stage_names = [s.name for s in run.document_stages]
    stage_color = {name: ch.color(i) for i, name in enumerate(stage_names)}
    colors = [stage_color.get(stage_of.get(r, ""), "#999999") for r in labels]
    used = {stage_of[r] for r, _ in top}
    reading = (f"{n(total)} documents rejected for {len(ranked)} reasons; the top one, {ranked[0][0]}, accounts for "
               f"{n(ranked[0][1])} ({pct(ranked[0][1], total)}) and the top three for "
               f"{pct(sum(v for _, v in ranked[:3]), total)}.")
    sec.charts.append(Chart("Rejected documents by reason", ch.hbars(
        labels, values, "Rejected documents by reason (colour: stage)", "documents", colors,
        {k: v for k, v in stage_color.items() if k in used}), reading))

    rej_stages = [s for s in stage_names if any(g[0] == s for g in groups)]
    src_count: Counter = Counter()
    for g in groups:
        src_count[g[2]] += g[4]
    sources = _top_cols(src_count, 12)
    m = _matrix(groups, lambda g: g[0], lambda g: g[2], rej_stages, sources)
    reading = _source_reading(run, groups, src_count)
    sec.charts.append(Chart("Rejections by stage and source", ch.heatmap(
        rej_stages, sources, m, "Rejected documents by stage and source", "source", "stage", "documents"), reading))

    lang_count: Counter = Counter()
    for g in groups:
        lang_count[g[3]] += g[4]
    langs = _top_cols(lang_count, 14)
    if lang_count.get(BEFORE_LANGID) and BEFORE_LANGID not in langs:
        langs[-1] = BEFORE_LANGID
    m = _matrix(groups, lambda g: g[0], lambda g: g[3], rej_stages, langs)
    top_lang = langs[0]
    by_stage_lang = Counter()
    for g in groups:
        if g[3] == top_lang:
            by_stage_lang[g[0]] += g[4]
    st, cnt = by_stage_lang.most_common(1)[0]
    reading = (f"'{top_lang}' has the most rejected documents ({n(lang_count[top_lang])}, "
               f"{pct(lang_count[top_lang], total)} of all rejections), most of them in {st} ({n(cnt)}); "
               f"{len(lang_count)} language labels in all.")
    sec.charts.append(Chart("Rejections by stage and language", ch.heatmap(
        rej_stages, langs, m, "Rejected documents by stage and language", "language", "stage", "documents"), reading))
    return sec


def _source_reading(run: Run, groups, src_count: Counter) -> str:
    """Which source loses the largest share of the documents it brought (first stage's input)."""
    first = run.document_stages[0]
    entered: Counter = Counter()
    for files in (first.kept_files, first.rejected_files):
        if files and "source" in run.columns(files):
            for src, cnt in run.rows(f"SELECT coalesce(source, '(none)'), count(*) FROM {parquet_source(files)} "
                                     "GROUP BY ALL"):
                entered[src] += int(cnt)
    top_src, top_n = src_count.most_common(1)[0]
    text = f"{top_src} has the most rejected documents ({n(top_n)})."
    rates = {s: src_count[s] / entered[s] for s in src_count if entered.get(s)}
    if len(rates) == 1:
        (only,) = rates
        text += f" It loses {pct(src_count[only], entered[only])} of what entered {first.name}."
    elif rates:
        worst = max(rates, key=lambda s: (rates[s], s))
        best = min(rates, key=lambda s: (rates[s], s))
        text += (f" Relative to what entered {first.name}, {worst} loses the largest share "
                 f"({pct(src_count[worst], entered[worst])}) and {best} the smallest "
                 f"({pct(src_count[best], entered[best])}).")
    return text


# ---------------------------------------------------------------- languages


def _lang_counts(run: Run, stage: StageView) -> dict[str, tuple[int, float]] | None:
    files = stage.kept_files
    cols = run.columns(files)
    if "lang" not in cols:
        return None
    size = "coalesce(sum(strlen(text)), 0)" if "text" in cols else "0"
    return {lang: (int(c), float(b)) for lang, c, b in run.rows(
        f"SELECT coalesce(lang, '(none)'), count(*), {size} FROM {parquet_source(files)} GROUP BY ALL")}


def languages(run: Run) -> Section | str:
    lid = run.first("langid")
    if lid is None or not lid.kept_files:
        return "no langid stage output"
    after = _lang_counts(run, lid)
    if not after:
        return "the langid output has no lang column"
    later = [s for s in run.document_stages[run.document_stages.index(lid) + 1:] if s.kept_files]
    final = later[-1] if later else None
    final_counts = _lang_counts(run, final) if final else None
    order = sorted(after, key=lambda k: (-after[k][0], k))
    shown = order if len(order) <= MAX_LANGS else order[: MAX_LANGS - 1]
    rest = order[len(shown):]

    def bars(counts: dict) -> list[int]:
        vals = [counts.get(k, (0, 0.0))[0] for k in shown]
        return vals + ([sum(counts.get(k, (0, 0.0))[0] for k in rest)] if rest else [])

    labels = shown + ([f"{len(rest)} others"] if rest else [])
    series = {f"after {lid.name}": bars(after)}
    if final_counts:
        series[f"after {final.name}"] = bars(final_counts)
    total = sum(v[0] for v in after.values())
    total_b = sum(v[1] for v in after.values())
    top2 = order[:2]
    reading = (f"{len(order)} languages after {lid.name}; {' and '.join(repr(k) for k in top2)} make "
               f"{pct(sum(after[k][0] for k in top2), total)} of the documents and "
               f"{pct(sum(after[k][1] for k in top2), total_b)} of the text.")
    if final_counts:
        kept_share = {k: final_counts.get(k, (0, 0))[0] / after[k][0] for k in order if after[k][0] >= 5}
        if kept_share:
            lo = min(kept_share, key=lambda k: (kept_share[k], k))
            hi = max(kept_share, key=lambda k: (kept_share[k], k))
            reading += (f" Of the languages with at least 5 documents, '{lo}' keeps the smallest share by {final.name} "
                        f"({kept_share[lo]:.0%}) and '{hi}' the largest ({kept_share[hi]:.0%}).")
    sec = Section("languages", "Languages")
    sec.charts.append(Chart("Documents per language", ch.grouped(labels, series, "Documents per language",
                                                                 "documents", "language", fmt="{:.0f}"), reading))
    return sec


# ---------------------------------------------------------------- quality rules


def quality(run: Run) -> Section | str:
    q = run.first("quality")
    if q is None:
        return "no quality stage"
    broken = {k[len("breaks_"):]: v for k, v in q.stats.items() if k.startswith("breaks_") and v}
    if not broken:
        return "the quality stage recorded no broken rules"
    reasons = (q.counts or {}).get("reasons", {})
    ranked = sorted(broken.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    rule, cnt = ranked[0]
    as_reason = reasons.get(f"quality.{rule}", 0)
    reading = (f"{rule} is broken by the most documents ({n(cnt)} of {n(q.counts['input'])} scored), and is the "
               f"reported reason for {n(as_reason)} of them (a rejected row names the first rule it broke; the "
               f"rest broke an earlier one too).")
    sec = Section("quality", "Quality rules")
    sec.charts.append(Chart("Documents breaking each quality rule", ch.hbars(
        [r for r, _ in ranked], [v for _, v in ranked], "Documents breaking each quality rule",
        "documents (a document may break several rules)"), reading))
    return sec


# ---------------------------------------------------------------- perplexity


def perplexity(run: Run) -> Section | str:
    st = run.first("perplexity")
    if st is None or not st.manifest:
        return "no finished perplexity stage"
    m = st.manifest
    cutoffs = m.get("cutoffs") or {}
    files = st.kept_files + st.rejected_files
    if not files or "ppl" not in run.columns(files):
        return "the perplexity shards have no ppl column"
    cfg = m.get("config") or {}
    lang_col = cfg.get("lang_column", "lang")
    excl = [str(x) for x in cfg.get("cutoff_exclude_sources") or []]
    cols = run.columns(files)
    if lang_col not in cols:
        return f"the perplexity shards have no {lang_col} column"
    is_excl = (f"source IN ({', '.join(sql_str(x) for x in excl)})" if excl and "source" in cols else "false")
    rows = run.rows(f"SELECT {lang_col}, list(ppl) FILTER (WHERE NOT {is_excl}), list(ppl) FILTER (WHERE {is_excl}) "
                    f"FROM {parquet_source(files)} WHERE ppl IS NOT NULL GROUP BY ALL ORDER BY count(*) DESC, 1")
    if not rows:
        return "no document was scored"
    panels = [(lang, np.asarray(v or [], dtype=float), cutoffs.get(lang, []), np.asarray(x or [], dtype=float))
              for lang, v, x in rows[:9]]
    pcts = "/".join(f"{p:g}th" for p in m.get("percentiles", []))
    tail: dict = {}
    if st.rejected_files and lang_col in run.columns(st.rejected_files):
        tail = dict(run.rows(f"SELECT {lang_col}, count(*) FROM {parquet_source(st.rejected_files)} GROUP BY ALL"))
    parts = []
    for lang, vals, cuts, ref in panels[:4]:
        text = f"'{lang}' " + (" / ".join(num3(c) for c in cuts) if cuts else "no cut-off")
        text += f", {n(tail.get(lang, 0))} rejected, median {num3(np.median(vals))}" if vals.size else ""
        if ref.size:
            text += f" against {num3(np.median(ref))} on its reference text"
        parts.append(text)
    reading = f"Per-language {pcts} percentile cut-offs (dashed): " + "; ".join(parts) + "."
    if any(p[3].size for p in panels):
        reading += f" Reference documents ({', '.join(excl)}, grey) are scored but left out of the cut-offs."
    sec = Section("perplexity", "Perplexity")
    sec.charts.append(Chart("Perplexity per language", ch.histograms(
        panels, "KenLM perplexity per language (log x-axis where the range is wide)", "perplexity (per token)",
        extra_label=f"{', '.join(excl)} (not in cut-offs)"), reading))
    lm = run.first("train-lm", "train_lm")
    models = (lm.manifest or {}).get("models", {}) if lm else {}
    if models:
        sec.tables.append(table(["language", "reference docs", "tokens", "n-grams", "model MB"], [
            [lang, n(v.get("docs", 0)), n(v.get("tokens", 0)), n(sum((v.get("ngrams") or {}).values())),
             f"{v.get('bytes', 0) / MB:.1f}"] for lang, v in sorted(models.items())]))
    return sec


# ---------------------------------------------------------------- dedup


def dedup(run: Run) -> Section | str:
    st = run.first("dedup")
    if st is None or not st.manifest:
        return "no finished dedup stage"
    cl = st.manifest.get("clusters") or {}
    hist = {int(k): int(v) for k, v in (cl.get("cluster_size_histogram") or {}).items()}
    if not hist:
        return "the dedup stage found no duplicate clusters"
    sizes = sorted(hist)
    removed = sum((s - 1) * c for s, c in hist.items())
    reasons = st.counts["reasons"] if st.counts else {}
    reading = (f"{n(sum(hist.values()))} clusters hold {n(sum(s * c for s, c in hist.items()))} documents; keeping one "
               f"per cluster removes {n(removed)} ({', '.join(f'{k} {n(v)}' for k, v in sorted(reasons.items()))}); "
               f"{pct(hist.get(2, 0), sum(hist.values()))} of clusters are pairs, the largest has {max(sizes)} "
               "documents.")
    sec = Section("dedup", "Deduplication")
    sec.charts.append(Chart("Duplicate cluster sizes", ch.vbars(
        [str(s) for s in sizes], [hist[s] for s in sizes], "Duplicate cluster sizes", "documents in the cluster",
        "clusters", log=max(hist.values()) > 50 * min(hist.values())), reading))
    jac = (st.manifest.get("candidates") or {}).get("candidate_jaccard_histogram") or {}
    if sum(jac.values()):
        thr = (st.manifest.get("lsh") or {}).get("verify_threshold")
        above = sum(v for k, v in jac.items() if thr is not None and _bin_low(k) >= thr)
        reading = (f"{n(sum(jac.values()))} candidate pairs from LSH were verified on exact Jaccard; {n(above)} "
                   f"({pct(above, sum(jac.values()))}) reach the threshold {thr} and become duplicate edges.")
        sec.charts.append(Chart("Exact Jaccard of candidate pairs", ch.vbars(
            list(jac), list(jac.values()), "Exact Jaccard of LSH candidate pairs", "Jaccard similarity (bin)",
            "pairs"), reading))
    return sec


def _bin_low(label: str) -> float:
    try:
        return float(label.strip("[]()").split(",")[0])
    except ValueError:
        return -1.0


# ---------------------------------------------------------------- PII


def pii(run: Run) -> Section | str:
    st = run.first("pii")
    if st is None or "pii.total" not in st.stats:
        return "no pii stage (or it recorded no detections)"
    stats = st.stats
    types = {k[4:]: v for k, v in stats.items()
             if k.startswith("pii.") and k[4:] not in ("total", "docs_with_pii", "chars_in")}
    order = sorted(types, key=lambda k: (-types[k], k))
    total = stats["pii.total"]
    docs = stats.get("pii.docs_with_pii", 0)
    top = order[0] if order and types[order[0]] else None
    reading = (f"{n(total)} detections in {n(docs)} of {n(st.counts['input'])} documents "
               f"({pct(docs, st.counts['input'])})" + (f"; {top} is the most frequent type ({n(types[top])}, "
                                                      f"{pct(types[top], total)})" if top else "") + ".")
    sec = Section("pii", "PII")
    sec.charts.append(Chart("PII detections by type", ch.vbars(order, [types[k] for k in order],
                                                               "PII detections by type", "type", "detections"),
                            reading))
    files = st.kept_files + st.rejected_files
    cols = run.columns(files)
    if {"pii_total", "source"} <= cols:
        rows = run.rows(f"SELECT coalesce(source, '(none)'), count(*), count(*) FILTER (WHERE pii_total > 0), "
                        f"coalesce(sum(pii_total), 0) FROM {parquet_source(files)} GROUP BY ALL ORDER BY 1")
        rows = [r for r in rows if r[1]]
        if rows:
            share = {r[0]: r[2] / r[1] for r in rows}
            worst = max(share, key=lambda s: (share[s], s))
            reading = (f"{worst} has the largest share of documents with PII ({share[worst]:.1%}); "
                       + ", ".join(f"{r[0]} {n(r[3])}" for r in rows) + " detections per source.")
            sec.charts.append(Chart("Documents with PII by source", ch.vbars(
                [r[0] for r in rows], [r[2] for r in rows], "Documents with PII by source", "source",
                "documents with at least one detection"), reading))
    return sec
