"""One or a few lines per stage saying what it did, from its manifest and contract files only.

Used by ``curate inspect`` (beside in / kept / rejected) and by the report's stage table: the
pii stage's detections, the languages langid found, the perplexity cut-offs, the dedup
clusters, the mixture's tokens, weights and epochs, and so on.
"""

from __future__ import annotations

from collections.abc import Callable

from .report_data import MIXTURE_FORMAT, SFT_FORMAT, VOCAB_FORMAT, StageView


def _n(x: float | int) -> str:
    return f"{int(round(x)):,}"


def _top(counts: dict[str, float], k: int = 4) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return _more([f"{name} {_n(v)}" for name, v in ranked], k)


def _num3(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _more(items: list[str], k: int) -> str:
    """The first ``k`` items joined, and how many were left out."""
    return ", ".join(items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def _docs(x: float) -> str:
    return f"{_n(x)} document{'' if x == 1 else 's'}"


def _prefixed(stats: dict, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in stats.items()
            if k.startswith(prefix) and k[len(prefix):] not in skip and v}


def _extract(s: StageView) -> list[str]:
    st = s.stats
    lines = []
    if "text_chars" in st:
        lines.append(f"{_n(st['text_chars'])} characters of main text")
    other = _prefixed(st, "records.", ("documents",))
    if other:
        lines.append("non-document records skipped: " + _top(other))
    return lines


def _langid(s: StageView) -> list[str]:
    langs = _prefixed(s.stats, "kept_lang.")
    lines = [f"{len(langs)} languages kept: " + _top(langs)] if langs else []
    second = {k: v for k, v in _prefixed(s.stats, "method.").items() if k != "fasttext"}
    if second:
        lines.append(f"second stage decided {_docs(sum(second.values()))}")
    return lines


def _pii(s: StageView) -> list[str]:
    st = s.stats
    if "pii.total" not in st:
        return []
    types = _prefixed(st, "pii.", ("total", "docs_with_pii", "chars_in"))
    policy = (s.manifest or {}).get("config", {}).get("policy")
    line = f"{_n(st['pii.total'])} detections in {_docs(st.get('pii.docs_with_pii', 0))}"
    if policy:
        line += f" ({policy})"
    return [line] + (["by type: " + _top(types, 5)] if types else [])


def _quality(s: StageView) -> list[str]:
    broken = _prefixed(s.stats, "breaks_")
    lines = []
    if broken:
        lines.append("rules broken (a document may break several): " + _top(broken, 3))
    if s.stats.get("cjk_mode_docs"):
        lines.append(f"{_docs(s.stats['cjk_mode_docs'])} scored in CJK character mode")
    return lines


def _train_lm(s: StageView) -> list[str]:
    m = s.manifest or {}
    models = m.get("models") or {}
    lines = []
    if models:
        ranked = sorted(models.items(), key=lambda kv: (-kv[1].get("tokens", 0), kv[0]))
        orders = sorted({v.get("order") for v in models.values() if v.get("order")})
        head = f"{len(models)} {'/'.join(map(str, orders))}-gram model{'s' if len(models) > 1 else ''}: "
        lines.append(head + _more([f"{lang} ({_n(v.get('docs', 0))} docs, {_n(v.get('tokens', 0))} tokens)"
                                   for lang, v in ranked], 3))
    if m.get("skipped_langs"):
        lines.append("no model (too little reference text): " + _more(sorted(m["skipped_langs"]), 6))
    return lines


def _perplexity(s: StageView) -> list[str]:
    m = s.manifest or {}
    lines = []
    if m.get("cutoffs"):
        pct = "/".join(f"p{p:g}" for p in m.get("percentiles", []))
        size = m.get("cutoff_docs_by_lang") or {}
        langs = sorted(m["cutoffs"], key=lambda lang: (-size.get(lang, 0), lang))
        lines.append(f"cut-offs {pct}: " + _more(
            [f"{lang} " + "/".join(_num3(c) for c in m["cutoffs"][lang]) for lang in langs], 4))
    if m.get("buckets"):
        lines.append("buckets: " + ", ".join(f"{'unscored' if b == 'none' else b} {_n(n)}"
                                             for b, n in m["buckets"].items()))
    return lines


def _dedup(s: StageView) -> list[str]:
    cl = (s.manifest or {}).get("clusters") or {}
    if "clusters" not in cl:
        return []
    return [f"{_n(cl['clusters'])} duplicate clusters hold {_n(cl.get('documents_in_clusters', 0))} documents "
            f"(largest {_n(cl.get('largest_cluster', 0))})"]


def _mix(s: StageView) -> list[str]:
    meta = s.json_file("meta.json", MIXTURE_FORMAT)
    mix = (s.manifest or {}).get("mixture") or {}
    sources = (meta or {}).get("sources") or {}
    if not meta and not mix:
        return []
    train = (meta or {}).get("train", {}).get("tokens", mix.get("train_tokens"))
    val = (meta or {}).get("val", {}).get("tokens", mix.get("val_tokens"))
    lines = [f"{_n(train or 0)} train + {_n(val or 0)} val tokens"]
    if sources:
        lines.append("weight target→achieved, epochs: " + _more([
            f"{name} {v['target_weight']:.2f}→{v['achieved_weight']:.2f} ×{v['epochs']:.2f}"
            for name, v in sorted(sources.items(), key=lambda kv: (-kv[1]["target_weight"], kv[0]))], 8))
    return lines


def _sft(s: StageView) -> list[str]:
    meta = s.json_file("meta.json", SFT_FORMAT)
    if not meta:
        return []
    tasks = meta.get("tasks") or {}
    lines = [f"{_n(meta.get('train', {}).get('tokens', 0))} train tokens in "
             f"{_n(meta.get('train', {}).get('examples', 0))} examples"]
    if tasks:
        lines.append("share target→achieved: " + _more([
            f"{t} {v.get('target_share', 0):.2f}→{v.get('achieved_share', 0):.2f}" for t, v in tasks.items()], 8))
    return lines


def _vocab(s: StageView) -> list[str]:
    idmap = s.json_file("id_map.json", VOCAB_FORMAT)
    if not idmap:
        return []
    lines = [f"{_n(len(idmap.get('new_tokens', [])))} new tokens: vocabulary "
             f"{_n(idmap.get('base_vocab_size', 0))} → {_n(idmap.get('vocab_size', 0))}"]
    rep = s.json_file("report.json") or {}
    for side in ("domain", "general"):
        r = rep.get(side)
        if isinstance(r, dict) and r.get("chars_per_token_before") and r.get("chars_per_token_after"):
            lines.append(f"{side}: {r['chars_per_token_before']:.2f} → {r['chars_per_token_after']:.2f} chars/token, "
                         f"{_n(r.get('docs_changed', 0))} of {_docs(r.get('docs', 0))} changed")
    return lines


SUMMARIES: dict[str, Callable[[StageView], list[str]]] = {
    "extract": _extract, "langid": _langid, "pii": _pii, "quality": _quality, "train-lm": _train_lm,
    "train_lm": _train_lm, "perplexity": _perplexity, "dedup": _dedup, "mix": _mix, "vocab": _vocab,
}


def stage_summary(stage: StageView) -> list[str]:
    """What ``stage`` did, in a few short lines (empty when its files say nothing more)."""
    fn = SUMMARIES.get(stage.type)
    if fn is not None:
        return fn(stage)
    lines = _sft(stage) or _vocab(stage) or _mix(stage)
    return lines + _pii(stage) + _generic(stage)


def _generic(s: StageView) -> list[str]:
    """Lines any stage earns from common manifest keys (a plugin's or an SFT stage's)."""
    m = s.manifest or {}
    lines = []
    if isinstance(m.get("cutoffs"), dict) and m["cutoffs"]:
        pct = "/".join(f"p{p:g}" for p in m.get("percentiles", []))
        cuts = {k: v for k, v in m["cutoffs"].items() if isinstance(v, list)}
        lines.append(f"cut-offs {pct}: ".replace(" :", ":") + _more(
            [f"{k} " + "/".join(_num3(c) for c in v if c is not None) for k, v in sorted(cuts.items())], 4))
    if "contaminated" in s.stats:
        lines.append(f"{_n(s.stats['contaminated'])} contaminated (matched an evaluation set)")
    return lines
