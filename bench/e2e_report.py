"""The end-to-end section of docs/BENCHMARKS.md, drawn from one bench_e2e.py run's results.

``render(results)`` gives the Markdown (between the marker comments); ``write_section`` puts it in
the file in place of the previous one (or appends it). Every figure comes from ``results``;
``python bench/e2e_report.py SCRATCH/results.json [DOC]`` redraws the section from a saved run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BEGIN = "<!-- bench-e2e:begin (written by bench/bench_e2e.py from one run; do not edit by hand) -->"
END = "<!-- bench-e2e:end -->"
LABEL = {
    "curate": "curate (Ray), extract → langid → quality → MinHash dedup",
    "datatrove": "DataTrove 0.10.1, extract + filters, then its 4-step MinHash",
    "nemo": "NeMo Curator 1.4.0 (Ray Data), extract + filters, no dedup (needs a GPU)",
}


CORPUS_PAGES = 7001  # pages in ../shared/corpora/debian-docs


def med(xs):
    return statistics.median(xs) if xs else None


def spread(xs, fmt="{:.1f}"):
    """``median (min–max)`` of a list of numbers."""
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def ok_runs(results, row, system, corpus=None):
    return [r for r in results["runs"]
            if r["row"] == row and r["system"] == system and r["rc"] == 0 and (corpus is None or r["corpus"] == corpus)]


def _speed_rows(results):
    c1 = results["corpora"]["1x"]
    n, mb = c1["records"], c1["html_bytes"] / 1e6
    lines = ["| system | runs | wall s | docs/s | MB/s of HTML | CPU-s per 1,000 docs | peak tree RSS MB | kept after filters | kept after dedup |",
             "|---|---|---|---|---|---|---|---|---|"]
    rates = {}
    for system in ("curate", "datatrove", "nemo"):
        runs = ok_runs(results, "main", system)
        failed = [r for r in results["runs"] if r["row"] == "main" and r["system"] == system and r["rc"] != 0]
        if not runs and not failed:
            continue
        walls = [r["wall_s"] for r in runs]
        rates[system] = [n / w for w in walls]
        kept = sorted({r.get("filtered_docs") for r in runs} - {None})
        dedup = sorted({r.get("deduped_docs") for r in runs} - {None})
        lines.append(
            f"| {LABEL[system]} | {len(runs)}" + (f" (+{len(failed)} failed)" if failed else "")
            + f" | {spread(walls)} | {spread(rates[system])} | {spread([mb / w for w in walls], '{:.2f}')}"
            f" | {spread([r['cpu_s'] / n * 1000 for r in runs], '{:.0f}')} | {spread([r['peak_tree_rss_mb'] for r in runs], '{:.0f}')}"
            f" | {'–'.join(map(str, kept)) or '–'} | {'–'.join(map(str, dedup)) or '–'} |")
    return lines, rates


def _ratio_lines(results, rates):
    """Median docs/s of curate over each peer's, and the range of the same-round ratios."""
    out = []
    if not rates.get("curate"):
        return out
    by_round = {}
    for r in results["runs"]:
        if r["row"] == "main" and r["rc"] == 0:
            by_round.setdefault(r["round"], {})[r["system"]] = r["wall_s"]
    for peer in ("datatrove", "nemo"):
        if not rates.get(peer):
            continue
        ratio = med(rates["curate"]) / med(rates[peer])
        per_round = [rd[peer] / rd["curate"] for rd in by_round.values() if peer in rd and "curate" in rd]
        verdict = "reaches" if ratio >= 3 else "does not reach"
        out.append(f"- curate / {peer}: **{ratio:.2f}×** the docs/s (medians); same-round ratios "
                   f"{', '.join(f'{x:.2f}' for x in per_round)}. It {verdict} the 3× aim.")
    return out


def _scaled_ratio_lines(results):
    """curate over each peer on the larger corpus, where a peer ran there too."""
    out = []
    for key in [k for k in results["corpora"] if k != "1x"]:
        cur = ok_runs(results, key, "curate")
        for peer in ("datatrove", "nemo"):
            other = ok_runs(results, key, peer)
            if cur and other:
                ratio = med([r["wall_s"] for r in other]) / med([r["wall_s"] for r in cur])
                out.append(f"- {key} corpus, curate / {peer}: **{ratio:.2f}×** the docs/s "
                           f"({len(cur)} and {len(other)} runs). It {'reaches' if ratio >= 3 else 'does not reach'} the 3× aim.")
    return out


def aims(results) -> list[tuple[str, str, bool]]:
    """Issue 17's measurable aims as ``(aim, measured, reached)``, from this run only."""
    out = []
    base, one = ok_runs(results, "main", "curate"), ok_runs(results, "1 worker", "curate")
    dt = ok_runs(results, "main", "datatrove")
    if base and dt:
        cur_rss, dt_rss = med([r["peak_tree_rss_mb"] for r in base]), med([r["peak_tree_rss_mb"] for r in dt])
        out.append(("peak tree RSS no higher than DataTrove's", f"{cur_rss:.0f} MB against {dt_rss:.0f} MB",
                    cur_rss <= dt_rss))
    if base and one:
        sp = med([r["wall_s"] for r in one]) / med([r["wall_s"] for r in base])
        out.append(("2 workers ≥ 1.8× one worker", f"{sp:.2f}×", sp >= 1.8))
    for key in [k for k in results["corpora"] if k != "1x"]:
        big = ok_runs(results, key, "curate")
        if base and big:
            grow = med([r["peak_tree_rss_mb"] for r in big]) / med([r["peak_tree_rss_mb"] for r in base])
            out.append((f"peak memory grows < 1.3× from 1x to {key}", f"×{grow:.2f}", grow < 1.3))
    return out


def _aim_lines(results):
    return [f"- {aim}: {got}: {'reached' if ok else 'not reached'}." for aim, got, ok in aims(results)]


def _curate_breakdown(results):
    """Where curate's wall time goes: the stages' seconds of its median run (the run whose wall
    time is the median: medians taken stage by stage need not add up to any run)."""
    runs = sorted((r for r in ok_runs(results, "main", "curate") if "stages" in r), key=lambda r: r["wall_s"])
    if not runs:
        return []
    run = runs[(len(runs) - 1) // 2]
    secs = {st: v["seconds"] for st, v in run["stages"].items()}
    wall = run["wall_s"]
    rest = wall - sum(secs.values())
    return [f"- curate's median run, {wall:.1f} s: " + ", ".join(f"{st} {v:.1f} s" for st, v in secs.items())
            + f" (extract includes starting Ray), the remaining {rest:.1f} s are the process's start-up, "
            "pipeline validation and shutdown."]


def _scaling_lines(results):
    c = results["corpora"]
    lines = ["| run | corpus (docs) | wall s | docs/s | peak tree RSS MB | × reference |", "|---|---|---|---|---|---|"]
    base = ok_runs(results, "main", "curate")
    one = ok_runs(results, "1 worker", "curate")
    n1 = c["1x"]["records"]
    if base:
        lines.append(f"| curate, 2 workers (the main rows) | 1x ({n1}) | {spread([r['wall_s'] for r in base])} | "
                     f"{spread([n1 / r['wall_s'] for r in base])} | {spread([r['peak_tree_rss_mb'] for r in base], '{:.0f}')} | |")
    if base and one:
        sp = med([n1 / r["wall_s"] for r in base]) / med([n1 / r["wall_s"] for r in one])
        lines.append(f"| curate, 1 worker | 1x ({n1}) | {spread([r['wall_s'] for r in one])} | "
                     f"{spread([n1 / r['wall_s'] for r in one])} | {spread([r['peak_tree_rss_mb'] for r in one], '{:.0f}')} | "
                     f"2 workers = {sp:.2f}× 1 worker |")
    for key in [k for k in c if k != "1x"]:
        nk = c[key]["records"]
        for system in ("curate", "datatrove", "nemo"):
            big = ok_runs(results, key, system)
            small = ok_runs(results, "main", system)
            if not big:
                continue
            grow = med([r["peak_tree_rss_mb"] for r in big]) / med([r["peak_tree_rss_mb"] for r in small]) if small else None
            slow = med([r["wall_s"] for r in big]) / med([r["wall_s"] for r in small]) if small else None
            lines.append(f"| {system}, 2 workers | {key} ({nk}) | {spread([r['wall_s'] for r in big])} | "
                         f"{spread([nk / r['wall_s'] for r in big])} | {spread([r['peak_tree_rss_mb'] for r in big], '{:.0f}')} | "
                         + (f"time ×{slow:.2f}, peak memory ×{grow:.2f} of 1x |" if small else "|"))
    return lines


def _curate_funnel(run):
    st = run["stages"]
    q = st["quality"]["reasons"]
    rep = sum(v for k, v in q.items() if k.startswith(("quality.gopher_max_dup", "quality.gopher_max_top")))
    gq = sum(v for k, v in q.items() if k.startswith("quality.gopher")) - rep
    other = sum(v for k, v in q.items() if not k.startswith("quality.gopher"))
    return {
        "input documents": st["extract"]["input"],
        "dropped at extraction": st["extract"]["input"] - st["extract"]["kept"],
        "dropped by language ID": st["langid"]["input"] - st["langid"]["kept"],
        "dropped by Gopher repetition": rep,
        "dropped by Gopher quality": gq,
        "dropped by C4 / FineWeb rules": other,
        "kept after filters": st["quality"]["kept"],
        "removed as duplicates": st["dedup"]["input"] - st["dedup"]["kept"],
        "kept after dedup": st["dedup"]["kept"],
    }


def _dt_funnel(run):
    pr = run.get("peer_result") or {}
    steps = pr.get("extract_steps", {})

    def dropped(word):
        for name, s in steps.items():
            if word.lower() in name.lower():
                st = s["stats"]
                if "total" in st:  # the extractor counts timeouts and empty pages, not "dropped"
                    return st["total"] - st.get("forwarded", 0)
                return st.get("dropped", 0)
        return None

    out = {"dropped at extraction": dropped("trafilatura"), "dropped by language ID": dropped("language"),
           "dropped by Gopher repetition": dropped("repetition"), "dropped by Gopher quality": dropped("quality"),
           "dropped by C4 / FineWeb rules": "not run", "kept after filters": pr.get("filtered_docs"),
           "kept after dedup": pr.get("deduped_docs")}
    if pr.get("filtered_docs") is not None and pr.get("deduped_docs") is not None:
        out["removed as duplicates"] = pr["filtered_docs"] - pr["deduped_docs"]
    return out


def _reason_lines(results):
    n = results["corpora"]["1x"]["records"]
    cols = {}
    cur = ok_runs(results, "main", "curate")
    if cur and "stages" in cur[0]:
        cols["curate"] = _curate_funnel(cur[0])
    dt = ok_runs(results, "main", "datatrove")
    if dt:
        cols["DataTrove"] = {"input documents": n, **_dt_funnel(dt[0])}
    nm = ok_runs(results, "main", "nemo")
    if nm:
        k = nm[0].get("filtered_docs")
        cols["NeMo Curator"] = {"input documents": n, "dropped by all its steps together": None if k is None else n - k,
                                "kept after filters": k, "removed as duplicates": "not run", "kept after dedup": "not run"}
    keys = []
    for c in cols.values():
        keys += [k for k in c if k not in keys]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join("" if c.get(k) is None else str(c.get(k)) for c in cols.values()) + " |")
    lang_lines = []
    for system, runs in (("curate", cur), ("DataTrove", dt), ("NeMo Curator", nm)):
        langs = runs[0].get("kept_langs") if runs else None
        if langs:
            top = sorted(langs.items(), key=lambda kv: -kv[1])
            lang_lines.append(f"- {system}, languages of the kept documents: "
                              + ", ".join(f"{k} {v}" for k, v in top[:12]) + (f", {len(top) - 12} more" if len(top) > 12 else ""))
    if cur and "stages" in cur[0]:
        q = cur[0]["stages"]["quality"]["reasons"]
        top = sorted(q.items(), key=lambda kv: -kv[1])[:8]
        lang_lines.append("- curate's quality rejects by first failing rule: " + ", ".join(f"`{k}` {v}" for k, v in top))
    if dt:
        steps = (dt[0].get("peer_result") or {}).get("extract_steps", {})
        for name, s in steps.items():
            sub = {k: v for k, v in s["stats"].items() if k.startswith("dropped_")}
            if sub:
                top = sorted(sub.items(), key=lambda kv: -kv[1])[:6]
                lang_lines.append(f"- DataTrove {name.strip()}: " + ", ".join(f"`{k}` {v}" for k, v in top))
    return lines, lang_lines


def _f1_lines(results):
    f1 = results.get("extraction_f1") or {}
    lines = ["| extractor, settings | pages kept | F1 | precision | recall |", "|---|---|---|---|---|"]
    for name, r in f1.items():
        if isinstance(r, dict) and "shingle_f1" in r:
            lines.append(f"| {name} | {r.get('kept', r.get('pages', ''))} | {r['shingle_f1']:.4f} | "
                         f"{r['shingle_precision']:.4f} | {r['shingle_recall']:.4f} |")
    return lines if len(lines) > 2 else []


def render(results: dict) -> str:
    c1 = results["corpora"]["1x"]
    speed, rates = _speed_rows(results)
    funnel, notes = _reason_lines(results)
    f1 = _f1_lines(results)
    main_rounds = results["args"]["rounds"]
    parts = [
        BEGIN,
        "## End to end against DataTrove and NeMo Curator (`make bench-e2e`)",
        "",
        f"Run {results['started']} on {results['cpus']} cores, {results['bench_s']:.0f} s of runs, by",
        f"`{results['command']}`. Load average (1 min) {results['load_start'][0]} at the start and "
        f"{results['load_end'][0]} at the end; absolute figures move with the machine's load, the same-round "
        "ratios much less.",
        f"Input: {c1['records']} pages of `../shared/corpora/debian-docs` "
        + ("(all of them" if c1['records'] >= CORPUS_PAGES else "(every k-th, all packages") + ") rewritten by its "
        f"`make_warc.py` into {results['args']['shards']} WARC files ({c1['html_bytes'] / 1e6:.1f} MB of HTML). "
        f"{main_rounds} alternated rounds (the first system rotates each round); medians with (min–max). "
        "Peak RSS is summed over the whole process tree (Ray daemons included; shared pages count once per "
        "process), CPU seconds are those of the whole tree (user + system, the larger of getrusage over the reaped "
        "processes and the sum of each process's last sampled CPU time).",
        "",
        *speed,
        "",
        *_ratio_lines(results, rates),
        *_scaled_ratio_lines(results),
        "- NeMo Curator runs no dedup here, so its ratio compares curate's four steps with its three.",
        *_aim_lines(results),
        *_curate_breakdown(results),
        "",
        "Scaling (curate; the larger corpus adds perturbed mirror copies of every page, near-duplicates):",
        "",
        *_scaling_lines(results),
        "",
        "Why the kept sets differ (one run each; the counts of a system do not move between rounds "
        "except DataTrove's, whose 1 s extraction timeout drops a page or two):",
        "",
        *funnel,
        "",
        *notes,
        "- Rules: curate's langid keeps every language at lang_score ≥ 0.5 (DataTrove ≥ 0.65, NeMo ≥ 0.3, and "
        "NeMo's extractor only extracts languages it has stop lists for); curate runs C4 and FineWeb rules "
        "besides Gopher's; DataTrove extracts with favour_precision and deduplicate=True, curate with "
        + ("trafilatura's fast mode (no fallback extractors)" if results.get("curate_extract_config", {}).get("fast")
           else "trafilatura's balanced default") + ".",
    ]
    if f1:
        parts += ["", "Extraction F1 on `../shared/eval/extraction` (89 pages, 4-gram shingle F1):", "", *f1]
    parts += [END]
    return "\n".join(parts) + "\n"


def write_section(doc: Path, text: str) -> None:
    """Replace the text between the markers in ``doc`` (or append it), atomically."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from curate.shardio import atomic_write_bytes

    old = doc.read_text() if doc.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + text.rstrip("\n") + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_bytes(doc, new.encode())


if __name__ == "__main__":
    res = json.loads(Path(sys.argv[1]).read_text())
    out = render(res)
    if len(sys.argv) > 2:
        write_section(Path(sys.argv[2]), out)
    print(out)
