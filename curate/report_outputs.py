"""The report's sections on what a run produces beyond documents: the pretraining mixture,
SFT shards, the vocabulary extension, and the trainer's training, verification and ablation
results. Each reads the files of its contract (docs/ARCHITECTURE.md) and is skipped, with the
reason, when the run has none.
"""

from __future__ import annotations

import numpy as np

from . import report_charts as ch
from .report_data import MIXTURE_FORMAT, SFT_FORMAT, VOCAB_FORMAT, Run, read_json
from .report_sections import Chart, Section, n, table


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
        if not files or "task" not in (cols := run.columns(files)):
            continue
        score = next((c for c in ("ppl", "difficulty", "ifd") if c in cols), None)
        if score is None:
            continue
        rows = run.rows(f"SELECT task, list({score}) FROM read_parquet({[str(f) for f in files]}, "
                        f"union_by_name=true) WHERE {score} IS NOT NULL GROUP BY ALL ORDER BY 1")
        cutoffs = (st.manifest or {}).get("cutoffs") or {}
        panels = [(t, np.asarray(v, dtype=float), [c for c in (cutoffs.get(t) or []) if c is not None])
                  for t, v in rows[:9]]
        if panels:
            reading = "; ".join(f"{t}: median {np.median(v):,.1f}" + (f", cut-offs {', '.join(f'{c:,.1f}' for c in cuts)}"
                                                                        if cuts else "") for t, v, cuts in panels[:4]) + "."
            title = f"SFT {score} per task ({st.name})"
            sec.charts.append(Chart(title, ch.histograms(panels, title, score, log_x=score == "ppl",
                                                         ylabel="examples"), reading))
    return sec


def _num(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def vocab(run: Run) -> Section | str:
    found = [(s, s.json_file("id_map.json", VOCAB_FORMAT)) for s in run.stages]
    found = [(s, m) for s, m in found if m]
    if not found:
        return f"no stage wrote a {VOCAB_FORMAT} id_map.json"
    sec = Section("vocab", "Vocabulary extension")
    for st, idmap in found:
        rep = read_json(st.dir / "report.json") or {}
        added = len(idmap.get("new_tokens", []))
        sets = {k: v for k, v in rep.items() if isinstance(v, dict) and "before" in v and "after" in v}
        rows = []
        for name, v in sets.items():
            b, a = v["before"], v["after"]
            cpt_b, cpt_a = _num(b, "chars_per_token"), _num(a, "chars_per_token")
            tpd_b, tpd_a = _num(b, "tokens_per_doc"), _num(a, "tokens_per_doc")
            rows.append([name, _f(cpt_b), _f(cpt_a), _f(tpd_b), _f(tpd_a),
                         f"{cpt_a / cpt_b:.2f}×" if cpt_a and cpt_b else "",
                         f"{v['changed_docs_share']:.2%}" if isinstance(v.get("changed_docs_share"), float) else ""])
        cats = [r[0] for r in rows if r[1] and r[2]]
        if cats:
            before = [float(sets[c]["before"]["chars_per_token"]) for c in cats]
            after = [float(sets[c]["after"]["chars_per_token"]) for c in cats]
            best = max(range(len(cats)), key=lambda i: (after[i] / before[i], cats[i]))
            reading = (f"{n(added)} new tokens; {cats[best]} text goes from {before[best]:.2f} to {after[best]:.2f} "
                       f"characters per token ({after[best] / before[best]:.2f}× fewer tokens)"
                       + "".join(f"; {c}: {before[i]:.2f} → {after[i]:.2f}" for i, c in enumerate(cats) if i != best) + ".")
            title = f"Compression before and after ({st.name})"
            sec.charts.append(Chart(title, ch.grouped(cats, {"base tokenizer": before, "extended": after}, title,
                                                      "characters per token (higher: fewer tokens)", "held-out text"),
                                    reading))
        if rows:
            sec.tables.append(table(["text", "chars/token before", "after", "tokens/doc before", "after", "gain",
                                     "docs changed"], rows))
        freq = [t for t in rep.get("top_new_tokens", []) if isinstance(t, dict) and "token" in t]
        if freq:
            sec.tables.append(table(["most frequent new tokens", "count"],
                                    [[t["token"], n(t.get("count", 0))] for t in freq[:20]]))
        if not rows:
            sec.intro = (f"{n(added)} new tokens: vocabulary {n(idmap.get('base_vocab_size', 0))} → "
                         f"{n(idmap.get('vocab_size', 0))} (report.json has no before/after figures).")
    return sec


def _f(x) -> str:
    return f"{x:,.2f}" if isinstance(x, (int, float)) else ""


def _metrics(path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    import json

    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
            rows.append(r)
    return rows


def _curves(rows: list[dict], keys: list[str]) -> dict[str, tuple[list, list]]:
    out = {}
    for k in keys:
        pts = [(r["step"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
        if pts:
            out[k] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def training(run: Run) -> Section | str:
    """Loss curves from every ``metrics.jsonl`` in the run, verification checks, ablation tables."""
    files = sorted(p for p in run.dir.rglob("metrics.jsonl") if "_work" not in p.parts)
    verify = sorted(p for p in run.dir.rglob("verify.json") if "_work" not in p.parts)
    if not files and not verify:
        return "no metrics.jsonl or verify.json in the run (the trainer has not run on it)"
    sec = Section("training", "Training, verification and ablations")
    for path in files:
        rows = _metrics(path)
        keys = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
        curves = _curves(rows, keys)
        if not curves:
            continue
        rel = path.parent.relative_to(run.dir)
        main = next((k for k in ("train_loss", "loss", "val_loss") if k in curves), next(iter(curves)))
        ys = curves[main][1]
        reading = (f"{main} goes from {ys[0]:.3f} at step {curves[main][0][0]} to {ys[-1]:.3f} at step "
                   f"{curves[main][0][-1]} ({(ys[-1] - ys[0]) / ys[0]:+.1%}); {len(rows)} logged steps.")
        title = f"Loss curves ({rel})"
        sec.charts.append(Chart(title, ch.lines(curves, title, "step", "loss"), reading))
    for path in verify:
        data = read_json(path) or {}
        checks = data.get("checks", data if isinstance(data, list) else [])
        rows = [[c.get("name", ""), "pass" if c.get("ok") else "FAIL", c.get("reason", c.get("detail", ""))]
                for c in checks if isinstance(c, dict)]
        if rows:
            sec.tables.append(f"<h3>Verification ({html_escape(str(path.relative_to(run.dir)))})</h3>"
                              + table(["check", "result", "reason"], rows, numeric_from=9))
    if not sec.charts and not sec.tables:
        return "the trainer's files hold no loss values or checks"
    return sec


def html_escape(s: str) -> str:
    import html

    return html.escape(s)
