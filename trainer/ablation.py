"""Ablations (``make ablation``): does curation help, and does mixing general data into
continued pretraining limit forgetting? Same tokenizer, same model, same token budget per arm.

1. **raw vs curated**: models trained from scratch on every extracted document (``mix-raw``),
   on a sample of it as large as the curated mixture (``mix-raw-matched``: same data size,
   raw quality) and on the curated mixture (``mix``); all evaluated on the curated mixture's
   held-out documents, after dropping any that overlap an arm's training tokens (so the set is
   clean and no arm trained on it).
2. **continued pretraining**: a base model trained on general data (``mix-general``), then
   continued on domain data only (``mix-domain``) and on domain:general 1:5 (``mix-1to5``);
   general held-out loss (forgetting) and domain held-out loss for both.

The mixtures come from the pipeline ``manifests/ablation.yaml`` (run here through the ``curate``
command); the ``mix`` stage trains the tokenizer and the driver points the other mixtures at it.
Curves (PNG), ``table.md`` and ``results.json`` go to ``RUN/ablation/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from .data import Concat, read_meta, sha256_file
from .overlap import chunks, containment, split_docs
from .train import train

ARMS_MIX = ("mix-raw", "mix-raw-matched", "mix-general", "mix-domain", "mix-1to5")
# Mixtures whose token budget the driver sets to another mixture's train tokens.
MATCH_BUDGET = {"mix-raw-matched": "mix"}


def build_mixtures(run: Path, pipeline: Path, executor: str = "local", log=print) -> None:
    """Run the ablation pipeline: first up to ``mix`` (the tokenizer), then every other mixture."""
    spec = yaml.safe_load(pipeline.read_text())
    stages = spec["stages"]
    work = run / "ablation"
    work.mkdir(parents=True, exist_ok=True)
    first = dict(spec, stages={n: s for n, s in stages.items() if n not in ARMS_MIX})
    _curate_run(first, work / "pipeline-1.yaml", run, executor, log)
    tok = (run / "mix" / "tokenizer.json").resolve()
    full = dict(spec, stages={})
    for n, s in stages.items():
        if n in ARMS_MIX:
            mix = yaml.safe_load(Path(s["config"]["mixture"]).read_text())
            mix["tokenizer"] = {"path": str(tok)}
            if n in MATCH_BUDGET:
                mix["budget_tokens"] = int(read_meta(run / MATCH_BUDGET[n])["train"]["tokens"])
            s = dict(s, config=dict(s["config"], mixture=mix))
        full["stages"][n] = s
    _curate_run(full, work / "pipeline-2.yaml", run, executor, log)


def _curate_run(spec: dict, path: Path, run: Path, executor: str, log) -> None:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [sys.executable, "-m", "curate.cli", "run", str(path), "--run", str(run), "--executor", executor]
    log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"curate run failed ({res.returncode}): {(res.stderr or res.stdout).strip().splitlines()[-1:]}")


def clean_heldout(run: Path, out: Path, arms: list[Path], n: int = 13, threshold: float = 0.5) -> dict:
    """The curated mixture's held-out documents minus any overlapping an arm's training tokens.

    Writes ``out/`` as a mixture directory with only validation files and returns counts.
    """
    src = run / "mix"
    meta = read_meta(src)
    dtype, eos = np.dtype(meta["dtype"]), int(meta["tokenizer"]["eos_id"])
    docs: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    for f in meta["val"]["files"]:
        c = Concat([src / f["path"]], dtype)
        for i, d in enumerate(split_docs(c.read(0, c.n), eos)):
            docs[f"{f['path']}:{i}"] = d
            owner[f"{f['path']}:{i}"] = f["source"]
    dropped: set[str] = set()
    report = {}
    for arm in arms:
        am = read_meta(arm)
        tr = Concat([arm / f["path"] for f in am["train"]["files"]], np.dtype(am["dtype"]))
        c = containment(docs, chunks(tr.read, tr.n, n), n)
        bad = {c.names[k] for k in np.flatnonzero(c.share >= threshold)}
        dropped |= bad
        report[arm.name] = {"overlapping": len(bad), "max_share": float(c.share.max()) if len(c.share) else 0.0}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(src / meta["tokenizer"]["file"], out / meta["tokenizer"]["file"])
    files = []
    for s in sorted(set(owner.values())):
        keep = [np.append(d, eos).astype(dtype) for k, d in docs.items() if owner[k] == s and k not in dropped]
        if not keep:
            continue
        name = f"val-{s}-00000.bin"
        np.concatenate(keep).tofile(out / name)
        files.append({"path": name, "source": s, "tokens": int(sum(len(k) for k in keep)), "sha256": sha256_file(out / name)})
    hm = {"format": meta["format"], "dtype": meta["dtype"], "tokenizer": meta["tokenizer"],
          "train": {"tokens": 0, "files": []}, "val": {"tokens": sum(f["tokens"] for f in files), "files": files},
          "note": f"held-out documents of {src} that overlap no ablation arm's training tokens"}
    (out / "meta.json").write_text(json.dumps(hm, indent=1) + "\n")
    return {"docs": len(docs), "dropped": len(dropped), "kept_tokens": hm["val"]["tokens"], "per_arm": report}


def _curve(out: Path, prefix: str | None = None) -> list[dict]:
    """Eval events of a run as (tokens, loss and bpb per group), groups by source name prefix."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = {r["step"]: r["tokens"] for r in recs if r["event"] == "train"}
    pts = []
    for r in recs:
        if r["event"] != "eval":
            continue
        src = {k: v for k, v in r["sources"].items() if prefix is None or k.startswith(prefix)}
        pts.append({"step": r["step"], "tokens": per_step.get(r["step"], 0), "sources": src, **_pool(src.values())})
    return pts


def _pool(entries) -> dict:
    entries = list(entries)
    n = sum(e["tokens"] for e in entries)
    nll = sum(e["loss"] * e["tokens"] for e in entries)
    ln2_bytes = sum(e["loss"] * e["tokens"] / e["bpb"] for e in entries if e["bpb"])  # bpb = nll / (ln2 * bytes)
    return {"loss": nll / max(n, 1), "bpb": nll / ln2_bytes if ln2_bytes else None}


def run_ablation(run: Path, pipeline: Path, model: dict, steps: int, cpt_steps: int, executor: str = "local",
                 log=print) -> dict:
    """Build the mixtures, train every arm, write curves and the table; returns the results."""
    build_mixtures(run, pipeline, executor, log)
    work = run / "ablation"
    base_cfg = {**model, "eval_tokens": 0, "progress": True}
    toks = {m: read_meta(run / m)["tokenizer"]["sha256"] for m in ("mix",) + ARMS_MIX}
    if len(set(toks.values())) != 1:
        raise RuntimeError(f"the ablation mixtures do not share one tokenizer: {toks}")

    # 1. raw vs curated on a clean held-out set.
    held = clean_heldout(run, work / "heldout-clean", [run / "mix", run / "mix-raw", run / "mix-raw-matched"])
    log(f"clean held-out: {held['docs'] - held['dropped']} of {held['docs']} documents "
        f"({held['dropped']} dropped for overlap), {held['kept_tokens']} tokens")
    every = max(1, steps // 10)
    a = {}
    for arm, mix in (("raw", "mix-raw"), ("raw, curated size", "mix-raw-matched"), ("curated", "mix")):
        out = work / f"a-{arm.replace(', ', '-').replace(' ', '-')}"
        train({**base_cfg, "data": str(run / mix), "out": str(out), "max_steps": steps, "eval_every": every,
               "ckpt_every": steps, "resume": False, "eval_from": [str(work / "heldout-clean")]}, log=log)
        a[arm] = _curve(out, "heldout-clean/")

    # 2. continued pretraining from a base model trained on general data.
    base_out = work / "b-base"
    train({**base_cfg, "data": str(run / "mix-general"), "out": str(base_out), "max_steps": steps,
           "eval_every": every, "ckpt_every": steps, "resume": False}, log=log)
    every = max(1, cpt_steps // 10)
    b = {"base": _curve(base_out)[-1]}
    for arm, mix in (("domain-only", "mix-domain"), ("1:5", "mix-1to5")):
        out = work / f"b-{arm.replace(':', 'to')}"
        train({**base_cfg, "data": str(run / mix), "out": str(out), "max_steps": cpt_steps, "eval_every": every,
               "ckpt_every": cpt_steps, "resume": False, "init_from": str(base_out / "ckpt.pt"),
               "lr": model.get("lr", 3e-3) / 3, "warmup_steps": max(1, cpt_steps // 20)}, log=log)
        b[arm] = _curve(out)
    res = {"raw_vs_curated": a, "cpt": b, "heldout": held, "steps": steps, "cpt_steps": cpt_steps, "model": model,
           "tokens_per_step": model["batch_size"] * model["block_size"]}
    (work / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    _plots(work, res)
    table = _table(res)
    (work / "table.md").write_text(table)
    log(table)
    return res


def _plots(work: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, pts in res["raw_vs_curated"].items():
        ax.plot([p["tokens"] for p in pts], [p["loss"] for p in pts], marker="o", ms=3, label=arm)
    ax.set(xlabel="training tokens", ylabel="clean held-out loss (nats/token)", title="raw vs curated")
    ax.legend()
    fig.tight_layout()
    fig.savefig(work / "raw_vs_curated.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, src in zip(axes, ("general", "domain")):
        ax.axhline(res["cpt"]["base"]["sources"][src]["loss"], color="grey", ls="--", label="base model")
        for arm in ("domain-only", "1:5"):
            pts = res["cpt"][arm]
            ax.plot([p["tokens"] for p in pts], [p["sources"][src]["loss"] for p in pts], marker="o", ms=3, label=arm)
        ax.set(xlabel="continued-pretraining tokens", ylabel=f"{src} held-out loss (nats/token)", title=f"{src} held-out")
        ax.legend()
    fig.tight_layout()
    fig.savefig(work / "cpt_forgetting.png", dpi=120)
    plt.close(fig)


def _table(res: dict) -> str:
    a, b = res["raw_vs_curated"], res["cpt"]
    tps = res["tokens_per_step"]
    lines = [f"# Ablations ({res['model']['n_layer']} layers x {res['model']['n_embd']}, same tokenizer; "
             f"{res['steps'] * tps} tokens per arm, {res['cpt_steps'] * tps} continued-pretraining tokens)", "",
             f"Clean held-out: {res['heldout']['docs'] - res['heldout']['dropped']} documents of the curated mixture's "
             f"held-out split ({res['heldout']['dropped']} dropped for overlapping an arm's training tokens), "
             f"{res['heldout']['kept_tokens']} tokens.", "",
             "| arm | clean held-out loss (nats/token) | bits/byte |", "|---|---|---|"]
    for arm, pts in a.items():
        lines.append(f"| {arm} | {pts[-1]['loss']:.4f} | {pts[-1]['bpb']:.4f} |")
    srcs = sorted(next(iter(a.values()))[-1]["sources"])
    lines += ["", "| clean held-out loss by source | " + " | ".join(x.split("/", 1)[-1] for x in srcs) + " |",
              "|---|" + "---|" * len(srcs)]
    for arm, pts in a.items():
        ss = pts[-1]["sources"]
        lines.append(f"| {arm} | " + " | ".join(f"{ss[x]['loss']:.3f}" for x in srcs) + " |")
    lines += ["", "| continued pretraining | general held-out loss | change vs base | domain held-out loss | change vs base |",
              "|---|---|---|---|---|"]
    base = b["base"]["sources"]
    lines.append(f"| base (before) | {base['general']['loss']:.4f} | | {base['domain']['loss']:.4f} | |")
    for arm in ("domain-only", "1:5"):
        s = b[arm][-1]["sources"]
        lines.append(f"| {arm} | {s['general']['loss']:.4f} | {s['general']['loss'] - base['general']['loss']:+.4f} | "
                     f"{s['domain']['loss']:.4f} | {s['domain']['loss'] - base['domain']['loss']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.ablation", description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/ablation")
    ap.add_argument("--pipeline", default="manifests/ablation.yaml")
    ap.add_argument("--executor", default="local")
    ap.add_argument("--steps", type=int, default=400, help="training steps per from-scratch arm (and the base model)")
    ap.add_argument("--cpt-steps", type=int, default=200, help="continued-pretraining steps per arm")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--report-only", action="store_true", help="redraw the curves and table from RUN/ablation/results.json")
    a = ap.parse_args(argv)
    if a.report_only:
        work = Path(a.run) / "ablation"
        res = json.loads((work / "results.json").read_text())
        _plots(work, res)
        (work / "table.md").write_text(_table(res))
        print(_table(res))
        return 0
    model = {"n_layer": a.n_layer, "n_head": max(1, a.n_embd // 32), "n_embd": a.n_embd, "block_size": a.block_size,
             "batch_size": a.batch_size, "lr": a.lr, "warmup_steps": max(1, a.steps // 20), "threads": a.threads}
    run_ablation(Path(a.run), Path(a.pipeline), model, a.steps, a.cpt_steps, a.executor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
