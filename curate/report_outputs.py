"""The report's sections on what a run produces beyond documents: the pretraining mixture,
SFT shards, the vocabulary extension, and the trainer's training, verification and ablation
results. Each reads the files of its contract (docs/ARCHITECTURE.md) and is skipped, with the
reason, when the run has none.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from . import report_charts as ch
from .report_data import MIXTURE_FORMAT, SFT_FORMAT, VOCAB_FORMAT, Run, parquet_source, read_json
from .report_sections import Chart, Section, n, num3, table


def mixture(run: Run) -> Section | str:
    found = [(s, s.json_file("meta.json", MIXTURE_FORMAT)) for s in run.stages]
    found = [(s, m) for s, m in found if m and m.get("sources")]
    if not found:
        return f"no stage wrote a {MIXTURE_FORMAT} meta.json"
    sec = Section("mixture", "Pretraining mixture")
    for st, meta in found:
        src = meta["sources"]
        names = list(src)
        target = [float(src[k]["target_weight"]) for k in names]
        achieved = [float(src[k]["achieved_weight"]) for k in names]
        gap = {k: abs(a - t) for k, a, t in zip(names, achieved, target)}
        worst = max(gap, key=lambda k: (gap[k], k))
        train = meta.get("train", {}).get("tokens", sum(int(src[k].get("train_tokens", 0)) for k in names))
        reading = (f"{n(train)} train tokens over {len(names)} sources; achieved weights are within "
                   f"{gap[worst]:.2g} of the targets (largest gap: {worst}, {src[worst]['target_weight']:.6f} → "
                   f"{src[worst]['achieved_weight']:.6f}).")
        title = f"Target vs achieved token weights ({st.name})"
        sec.charts.append(Chart(title, ch.grouped(names, {"target": target, "achieved": achieved}, title,
                                                  "share of train tokens", "source"), reading))
        epochs = [float(src[k].get("epochs", 0)) for k in names]
        caps = [float(src[k].get("max_epochs", np.nan)) for k in names]
        binding = [k for k, e, c in zip(names, epochs, caps) if np.isfinite(c) and e >= c - 1e-9]
        hi = max(range(len(names)), key=lambda i: (epochs[i], names[i]))
        reading = (f"{names[hi]} is repeated most ({epochs[hi]:.2f} epochs); "
                   + (f"{', '.join(binding)} reach{'es' if len(binding) == 1 else ''} max_epochs, which bounds the "
                      f"budget." if binding else "no source reaches its max_epochs."))
        title = f"Epochs per source ({st.name})"
        sec.charts.append(Chart(title, ch.grouped(names, {"epochs": epochs}, title, "epochs", "source",
                                                  markers={"max_epochs": caps}), reading))
        rows = [[k, n(src[k].get("docs", 0)), n(src[k].get("tokens", 0)), n(src[k].get("train_tokens", 0)),
                 n(src[k].get("val_tokens", 0)), f"{src[k]['target_weight']:.3f}", f"{src[k]['achieved_weight']:.4f}",
                 f"{src[k].get('epochs', 0):.2f}"] for k in names]
        sec.tables.append(table(["source", "docs", "tokens", "train tokens", "val tokens", "target", "achieved",
                                 "epochs"], rows))
    return sec


def _example_lengths(stage_dir, split: dict) -> np.ndarray:
    """Example lengths (tokens) of one split, from the ``.idx`` offsets the SFT contract defines."""
    out = []
    for f in split.get("files", []):
        idx_path = stage_dir / f.get("idx", "")
        if f.get("idx") and idx_path.is_file():
            offsets = np.fromfile(idx_path, dtype="<i8")
            out.append(np.diff(offsets))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def sft(run: Run) -> Section | str:
    found = [(s, s.json_file("meta.json", SFT_FORMAT)) for s in run.stages]
    found = [(s, m) for s, m in found if m]
    if not found:
        return f"no stage wrote a {SFT_FORMAT} meta.json"
    sec = Section("sft", "SFT mixture")
    for st, meta in found:
        tasks = meta.get("tasks") or {}
        if tasks:
            names = list(tasks)
            target = [float(tasks[t].get("target_share", 0)) for t in names]
            achieved = [float(tasks[t].get("achieved_share", 0)) for t in names]
            gap = {t: abs(a - b) for t, a, b in zip(names, achieved, target)}
            worst = max(gap, key=lambda t: (gap[t], t))
            reading = (f"{len(names)} tasks; the largest gap between achieved and target share is {gap[worst]:.4f} "
                       f"({worst}).")
            title = f"SFT task shares ({st.name})"
            sec.charts.append(Chart(title, ch.grouped(names, {"target": target, "achieved": achieved}, title,
                                                      "share of examples", "task"), reading))
            sec.tables.append(table(["task", "examples", "tokens", "target share", "achieved share"], [
                [t, n(tasks[t].get("examples", 0)), n(tasks[t].get("tokens", 0)), f"{target[i]:.3f}",
                 f"{achieved[i]:.4f}"] for i, t in enumerate(names)]))
        panels = []
        for split in ("train", "val"):
            lengths = _example_lengths(st.dir, meta.get(split) or {})
            if lengths.size:
                panels.append((split, lengths, [meta["context_length"]] if meta.get("context_length") else []))
        if panels:
            tr = panels[0][1]
            reading = (f"{panels[0][0]}: {n(tr.size)} examples, median {np.median(tr):,.0f} tokens, 95th percentile "
                       f"{np.percentile(tr, 95):,.0f}" + (f"; context length {meta['context_length']:,} (dashed)"
                                                          if meta.get("context_length") else "") + ".")
            title = f"SFT example lengths ({st.name})"
            sec.charts.append(Chart(title, ch.histograms(panels, title, "tokens per example", ylabel="examples"),
                                    reading))
    for st in run.stages:
        files = st.kept_files + st.rejected_files
        if not files or "cutoffs" not in (st.manifest or {}) or "task" not in (cols := run.columns(files)):
            continue
        score = next((c for c in ("ppl", "difficulty", "ifd") if c in cols), None)
        if score is None:
            continue
        rows = run.rows(f"SELECT task, list({score}) FROM {parquet_source(files)} WHERE {score} IS NOT NULL "
                        "GROUP BY ALL ORDER BY 1")
        cutoffs = (st.manifest or {}).get("cutoffs") or {}
        panels = [(t, np.asarray(v, dtype=float), [c for c in (cutoffs.get(t) or []) if c is not None])
                  for t, v in rows[:9]]
        if panels:
            rej = Counter()
            if st.rejected_files and "reason" in run.columns(st.rejected_files):
                rej.update(dict(run.rows(f"SELECT task, count(*) FROM {parquet_source(st.rejected_files)} "
                                         "GROUP BY ALL")))
            reading = "; ".join(f"{t}: median {num3(np.median(v))}"
                                + (f", cut-offs {' / '.join(num3(c) for c in cuts)}, {n(rej[t])} dropped" if cuts
                                   else " (not cut)") for t, v, cuts in panels[:5]) + "."
            title = f"SFT {score} per task ({st.name})"
            sec.charts.append(Chart(title, ch.histograms(panels, title, score, log_x=score == "ppl",
                                                         ylabel="examples"), reading))
    return sec


def vocab(run: Run) -> Section | str:
    found = [(s, s.json_file("id_map.json", VOCAB_FORMAT)) for s in run.stages]
    found = [(s, m) for s, m in found if m]
    if not found:
        return f"no stage wrote a {VOCAB_FORMAT} id_map.json"
    sec = Section("vocab", "Vocabulary extension")
    for st, idmap in found:
        rep = read_json(st.dir / "report.json") or {}
        added = len(idmap.get("new_tokens", []))
        sides = [k for k in ("domain", "general") if isinstance(rep.get(k), dict)
                 and rep[k].get("chars_per_token_before") and rep[k].get("chars_per_token_after")]
        head = (f"{n(added)} new tokens: vocabulary {n(idmap.get('base_vocab_size', 0))} → "
                f"{n(idmap.get('vocab_size', 0))}")
        if not sides:
            sec.intro = head + " (report.json has no before/after figures)."
            continue
        before = [float(rep[k]["chars_per_token_before"]) for k in sides]
        after = [float(rep[k]["chars_per_token_after"]) for k in sides]
        parts = [f"{k} text {b:.2f} → {a:.2f} characters per token ({b / a - 1:+.1%} tokens"
                 + (f", {rep[k]['docs_changed_share']:.1%} of documents tokenise differently"
                    if isinstance(rep[k].get("docs_changed_share"), (int, float)) else "") + ")"
                 for k, b, a in zip(sides, before, after)]
        title = f"Compression before and after ({st.name})"
        sec.charts.append(Chart(title, ch.grouped(sides, {"base tokenizer": before, "extended": after}, title,
                                                  "characters per token (higher: fewer tokens)", "held-out text"),
                                head + "; " + "; ".join(parts) + "."))
        sec.tables.append(table(["held-out text", "docs", "chars/token before", "after", "tokens/doc before",
                                 "after", "docs changed"], [
            [k, n(rep[k].get("docs", 0)), _f(rep[k].get("chars_per_token_before")),
             _f(rep[k].get("chars_per_token_after")), _f(rep[k].get("tokens_per_doc_before")),
             _f(rep[k].get("tokens_per_doc_after")),
             _share(rep[k].get("docs_changed_share"))] for k in sides]))
        top = [p for p in rep.get("top_pieces", []) if isinstance(p, dict) and "count" in p][:30]
        if top:
            sec.tables.append("<p>Most used new pieces on the held-out domain text (uses): " + " · ".join(
                f"<code>{html.escape(str(p.get('text', p.get('token', ''))))}</code> {n(p['count'])}" for p in top)
                + "</p>")
    return sec


def _share(x) -> str:
    return f"{x:.2%}" if isinstance(x, (int, float)) else ""


def _f(x) -> str:
    return f"{x:,.2f}" if isinstance(x, (int, float)) else ""


def _metrics(path: Path) -> list[dict]:
    """The JSON lines of a trainer ``metrics.jsonl`` (a line being written is skipped)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
            rows.append(r)
    return rows


def _series(rows: list[dict], key: str = "loss") -> tuple[list, list]:
    pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _found(run: Run, name: str) -> list[Path]:
    return sorted(p for p in run.dir.rglob(name) if "_work" not in p.relative_to(run.dir).parts)


def _curves(run: Run, path: Path) -> list[Chart]:
    rows = _metrics(path)
    train = [r for r in rows if r.get("event", "train") == "train"]
    evals = [r for r in rows if r.get("event") == "eval"]
    spikes = [r for r in rows if r.get("event") == "spike"]
    where = str(path.parent.relative_to(run.dir))
    series = {name: xy for name, xy in (("train", _series(train)), ("validation", _series(evals))) if xy[0]}
    if not series:
        return []
    main = "validation" if "validation" in series else "train"
    x, y = series[main]
    reading = (f"{main} loss {y[0]:.3f} at step {x[0]} → {y[-1]:.3f} at step {x[-1]} ({(y[-1] - y[0]) / y[0]:+.1%})"
               + (f"; train loss ends at {series['train'][1][-1]:.3f}" if main != "train" and "train" in series else "")
               + f"; {len(spikes)} loss spike{'' if len(spikes) == 1 else 's'} rolled back.")
    out = [Chart(f"Loss curves ({where})", ch.lines(series, f"Loss ({where})", "step", "loss (nats per token)"),
                 reading)]
    sources = sorted({s for r in evals for s in (r.get("sources") or {})})
    per = {}
    for src in sources:
        pts = [(r["step"], r["sources"][src].get("bpb")) for r in evals if src in (r.get("sources") or {})]
        pts = [(a, b) for a, b in pts if isinstance(b, (int, float))]
        if pts:
            per[src] = ([a for a, _ in pts], [b for _, b in pts])
    if per:
        gain = {s: (v[1][0] - v[1][-1]) / v[1][0] for s, v in per.items() if v[1][0]}
        best = max(gain, key=lambda s: (gain[s], s))
        worst = min(gain, key=lambda s: (gain[s], s))
        first_last = {k: f"{v[1][0]:.3f} → {v[1][-1]:.3f}" for k, v in per.items()}
        reading = (f"{len(per)} validation sources; {best} improves most ({first_last[best]} bits/byte) and {worst} "
                   f"least ({first_last[worst]}).")
        out.append(Chart(f"Validation loss per source ({where})", ch.lines(
            per, f"Validation bits per byte per source ({where})", "step", "bits per byte"), reading))
    return out


def _verification(run: Run, path: Path) -> str | None:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        return None
    checks = [c for c in data["checks"] if isinstance(c, dict) and "name" in c]
    if not checks:
        return None
    fails = [c["name"] for c in checks if c.get("status") == "fail"]
    head = (f"{len(checks) - len(fails)} of {len(checks)} checks pass or were skipped"
            + (f"; failed: {', '.join(fails)}" if fails else ""))
    where = str(path.parent.relative_to(run.dir))
    return (f"<h3>Verification of {html.escape(Path(str(data.get('mixture', where))).name)} "
            f"<small>{html.escape(where)}</small></h3><p>{html.escape(head)}</p>"
            + table(["check", "result", "reason"], [[c["name"], str(c.get("status", "")).upper(), c.get("reason", "")]
                                                   for c in checks], numeric_from=9))


def _ablation(run: Run, path: Path) -> tuple[list[Chart], list[str]]:
    """Charts and a table from trainer/ablation.py's ``results.json``."""
    res = read_json(path)
    if not isinstance(res, dict):
        return [], []
    where = str(path.parent.relative_to(run.dir))
    charts, tables = [], []
    a = {arm: pts for arm, pts in (res.get("raw_vs_curated") or {}).items() if isinstance(pts, list) and pts}
    if a:
        series = {arm: ([p["tokens"] for p in pts], [p["loss"] for p in pts]) for arm, pts in a.items()}
        final = {arm: pts[-1]["loss"] for arm, pts in a.items()}
        best = min(final, key=lambda k: (final[k], k))
        held = res.get("heldout") or {}
        docs = held.get("docs", 0) - held.get("dropped", 0)
        reading = (f"After {n(max(p['tokens'] for pts in a.values() for p in pts))} training tokens per arm, "
                   + ", ".join(f"{arm} ends at {v:.3f}" for arm, v in final.items())
                   + f" nats/token on {n(docs)} clean held-out documents; {best} is lower by "
                   f"{max(final.values()) - final[best]:.3f}.")
        title = f"Raw vs curated: clean held-out loss ({where})"
        charts.append(Chart(title, ch.lines(series, title, "training tokens", "held-out loss (nats per token)"),
                            reading))
    cpt = res.get("cpt") or {}
    base = (cpt.get("base") or {}).get("sources") or {}
    arms = {k: v for k, v in cpt.items() if k != "base" and isinstance(v, list) and v}
    groups = [g for g in ("general", "domain") if g in base]
    if arms and groups:
        panels = []
        for g in groups:
            series = {arm: ([p["tokens"] for p in pts], [p["sources"][g]["loss"] for p in pts])
                      for arm, pts in arms.items() if all(g in p.get("sources", {}) for p in pts)}
            panels.append((f"{g} held-out", series, base[g]["loss"]))
        change = {g: {arm: pts[-1]["sources"][g]["loss"] - base[g]["loss"] for arm, pts in arms.items()
                      if g in pts[-1].get("sources", {})} for g in groups}
        parts = [f"{g} loss from {base[g]['loss']:.3f} before: " + ", ".join(
            f"{arm} {d:+.3f}" for arm, d in change[g].items()) for g in groups]
        if "general" in change and change["general"]:
            least = min(change["general"], key=lambda k: (change["general"][k], k))
            parts.append(f"{least} forgets least")
        title = f"Continued pretraining: forgetting and domain gain ({where})"
        charts.append(Chart(title, ch.line_panels(panels, title, "continued-pretraining tokens",
                                                  "held-out loss (nats per token)"), "; ".join(parts) + "."))
        rows = [["base (before)"] + [f"{base[g]['loss']:.4f}" for g in groups]]
        rows += [[arm] + [f"{pts[-1]['sources'][g]['loss']:.4f} ({change[g][arm]:+.4f})" for g in groups]
                 for arm, pts in arms.items()]
        tables.append(table(["continued pretraining"] + [f"{g} held-out loss" for g in groups], rows))
    return charts, tables


def training(run: Run) -> Section | str:
    """Loss curves from every trainer ``metrics.jsonl`` in the run, verification reports, and
    the ablations (``results.json`` of trainer/ablation.py; its arms' own curves are not repeated)."""
    sec = Section("training", "Training, verification and ablations")
    ablations = _found(run, "results.json")
    ablation_dirs = [p.parent for p in ablations]
    for path in _found(run, "metrics.jsonl"):
        if not any(path.is_relative_to(d) for d in ablation_dirs):
            sec.charts.extend(_curves(run, path))
    for path in _found(run, "report.json"):
        block = _verification(run, path)
        if block:
            sec.tables.append(block)
    for path in ablations:
        charts, tables = _ablation(run, path)
        sec.charts.extend(charts)
        sec.tables.extend(tables)
    if not sec.charts and not sec.tables:
        return "no trainer metrics.jsonl, verification report or ablation results in the run"
    return sec
