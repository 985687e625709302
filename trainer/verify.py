"""``curate verify RUN``: check every mixture of a run before any real training.

Checks, each ``PASS``/``FAIL``/``SKIP`` with a one-line reason:

- ``files``: every listed file exists, holds the listed number of tokens and the listed sha256.
- ``tokenizer``: ``tokenizer.json`` has meta.json's sha256, vocabulary size and EOS id; the dtype
  fits the vocabulary; no token id in any shard reaches the vocabulary size.
- ``proportions`` (pretraining): the per-document sidecar agrees with the files and with
  meta.json's per-source train tokens, and batches drawn by the trainer's own sampler hold each
  source's target share of tokens within ``z`` standard errors (finite-population corrected;
  windows are sampled without replacement) plus 0.005.
- ``overlap``: no validation document has ``overlap_threshold`` or more of its distinct token
  ``ngram``-grams anywhere in the training tokens.
- ``masks`` (SFT): each example's loss mask is 1 exactly on its assistant turns (after the
  template's assistant header, through the end-of-turn token).
- ``training``: a short run of a tiny model; the validation loss (overall and per source) must
  end below where it started.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import SFT_FORMAT, Concat, DataError, PretrainData, read_meta, sha256_file
from .masks import describe_mismatch, expected_mask, template_markers
from .overlap import chunks, containment, split_docs


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skip
    reason: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class VerifyOptions:
    """Knobs of the checks (defaults are what ``curate verify`` uses)."""

    sample_windows: int = 1024
    z: float = 4.0
    floor: float = 0.005
    ngram: int = 13
    overlap_threshold: float = 0.5
    train_steps: int = 60
    block_size: int = 64
    batch_size: int = 8
    seed: int = 0
    threads: int = 0
    progress: bool = True


def find_mixtures(path: str | Path) -> list[Path]:
    """``path`` itself when it holds a mixture's meta.json, else its subdirectories that do."""
    p = Path(path)
    if (p / "meta.json").is_file():
        return [p]
    out = []
    for d in sorted(x for x in p.iterdir() if x.is_dir()) if p.is_dir() else []:
        try:
            read_meta(d)
        except DataError:
            continue
        out.append(d)
    return out


# ----------------------------------------------------------------------------- checks


def _entries(meta: dict) -> list[dict]:
    return list(meta["train"]["files"]) + list(meta.get("val", {}).get("files", []))


def check_files(d: Path, meta: dict) -> Check:
    item = np.dtype(meta["dtype"]).itemsize
    bad = []
    for f in _entries(meta):
        parts = [(f["path"], f.get("sha256"), f["tokens"] * item)]
        if "mask" in f:
            parts.append((f["mask"], f.get("mask_sha256"), f["tokens"]))
        if "idx" in f:
            parts.append((f["idx"], f.get("idx_sha256"), None))
        if "docs" in f:
            parts.append((f["docs"], f.get("docs_sha256"), None))
        for name, sha, size in parts:
            p = d / name
            if not p.is_file():
                bad.append(f"{name}: missing")
            elif size is not None and p.stat().st_size != size:
                bad.append(f"{name}: {p.stat().st_size} bytes, meta.json implies {size}")
            elif sha and sha256_file(p) != sha:
                bad.append(f"{name}: sha256 differs from meta.json")
    n = sum(1 for _ in _entries(meta))
    if bad:
        return Check("files", "fail", f"{len(bad)} problem(s), first: {bad[0]}")
    return Check("files", "pass", f"{n} token files match meta.json (size and sha256)")


def check_tokenizer(d: Path, meta: dict) -> Check:
    from tokenizers import Tokenizer

    t = meta["tokenizer"]
    path = d / t.get("file", "tokenizer.json")
    if not path.is_file():
        return Check("tokenizer", "fail", f"{path.name} is missing")
    sha = sha256_file(path)
    if sha != t["sha256"]:
        return Check("tokenizer", "fail", f"{path.name} has sha256 {sha[:12]}, meta.json says {t['sha256'][:12]}")
    tok = Tokenizer.from_file(str(path))
    vocab = int(t["vocab_size"])
    if tok.get_vocab_size(with_added_tokens=True) != vocab:
        return Check("tokenizer", "fail", f"tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids, meta.json says {vocab}")
    if "eos_token" in t and tok.token_to_id(t["eos_token"]) != t.get("eos_id"):
        return Check("tokenizer", "fail", f"EOS {t['eos_token']!r} is id {tok.token_to_id(t['eos_token'])}, meta.json says {t.get('eos_id')}")
    want = "uint16" if vocab < 65536 else "uint32"
    if meta["dtype"] != want:
        return Check("tokenizer", "fail", f"dtype {meta['dtype']} for a vocabulary of {vocab} (expected {want})")
    dtype = np.dtype(meta["dtype"])
    top = -1
    for f in _entries(meta):
        p = d / f["path"]
        if p.is_file() and p.stat().st_size:
            arr = np.memmap(p, dtype=dtype, mode="r")
            for a in range(0, len(arr), 1 << 24):
                top = max(top, int(arr[a : a + (1 << 24)].max()))
            if top >= vocab:
                return Check("tokenizer", "fail", f"{f['path']} holds token id {top} >= vocabulary size {vocab}")
    return Check("tokenizer", "pass", f"sha256 {sha[:12]}, {vocab} ids, {meta['dtype']}, largest id in the shards {top}")


def check_proportions(d: Path, meta: dict, opt: VerifyOptions) -> Check:
    data = PretrainData(d, opt.block_size, opt.batch_size, opt.seed)
    if not data.has_doc_index():
        return Check("proportions", "fail", "no per-document sidecar (train-*.docs.npy): rerun the mix stage")
    for k, f in enumerate(meta["train"]["files"]):
        side = np.load(d / f["docs"], allow_pickle=False)
        ends = side["off"] + side["len"]
        if len(side) and (side["off"][0] != 0 or np.any(side["off"][1:] != ends[:-1]) or ends[-1] != f["tokens"]):
            return Check("proportions", "fail", f"{f['docs']}: documents do not tile the {f['tokens']} tokens of {f['path']}")
    _, dl, src = data.doc_index()
    per = np.bincount(src, weights=dl, minlength=len(data.sources)).astype(np.int64)
    for name, tokens in zip(data.sources, per):
        want = int(meta["sources"][name]["train_tokens"])
        if tokens != want:
            return Check("proportions", "fail", f"{name}: the sidecar has {tokens} train tokens, meta.json says {want}")
    n = min(data.n_rows, opt.sample_windows)
    n_batches = -(-n // opt.batch_size)
    starts = np.concatenate([data.window_starts(b) for b in range(n_batches)])[:n]
    share = data.target_sources(starts) / data.T  # (windows, sources)
    fpc = np.sqrt(max(0.0, 1.0 - n / data.n_rows))
    se = share.std(axis=0, ddof=1) / np.sqrt(n) * fpc if n > 1 else np.zeros(share.shape[1])
    worst = None
    for j, name in enumerate(data.sources):
        target = float(meta["sources"][name]["target_weight"])
        got, tol = float(share[:, j].mean()), opt.z * float(se[j]) + opt.floor
        excess = abs(got - target) - tol
        if worst is None or excess > worst[0]:
            worst = (excess, name, got, target, tol)
    excess, name, got, target, tol = worst
    verdict = "fail" if excess > 0 else "pass"
    head = f"{name}: {got:.1%} of sampled tokens vs target {target:.1%}, tolerance ±{tol:.1%}"
    return Check("proportions", verdict, (head if verdict == "fail" else f"worst source {head}")
                 + f" ({n} windows of {data.T} tokens, {opt.z:g} standard errors + {opt.floor:g})")


def _val_docs_pretrain(d: Path, meta: dict) -> dict[str, np.ndarray]:
    dtype, eos = np.dtype(meta["dtype"]), int(meta["tokenizer"]["eos_id"])
    out = {}
    for f in meta["val"]["files"]:
        c = Concat([d / f["path"]], dtype)
        for i, doc in enumerate(split_docs(c.read(0, c.n), eos)):
            out[f"{f['path']} doc {i}"] = doc
    return out


def _sft_examples(d: Path, meta: dict, split: str):
    dtype = np.dtype(meta["dtype"])
    for f in meta.get(split, {}).get("files", []):
        tok = np.memmap(d / f["path"], dtype=dtype, mode="r")
        mask = np.memmap(d / f["mask"], dtype=np.uint8, mode="r")
        idx = np.fromfile(d / f["idx"], dtype="<i8")
        for i in range(len(idx) - 1):
            yield f["path"], i, np.asarray(tok[idx[i] : idx[i + 1]]), np.asarray(mask[idx[i] : idx[i + 1]])


def check_overlap(d: Path, meta: dict, opt: VerifyOptions) -> Check:
    if meta["format"] == SFT_FORMAT:
        held = {f"{p} example {i}": t for p, i, t, _ in _sft_examples(d, meta, "val")}
    else:
        held = _val_docs_pretrain(d, meta)
    if not held:
        return Check("overlap", "skip", "no validation documents")
    train = Concat([d / f["path"] for f in meta["train"]["files"]], np.dtype(meta["dtype"]))
    c = containment(held, chunks(train.read, train.n, opt.ngram), opt.ngram)
    share = c.share
    bad = np.flatnonzero(share >= opt.overlap_threshold)
    rule = f"{opt.overlap_threshold:.0%} of a document's distinct {opt.ngram}-grams in train"
    if len(bad):
        k = int(bad[np.argmax(share[bad])])
        return Check("overlap", "fail", f"{len(bad)} of {len(c.names)} validation documents overlap train "
                     f"(>= {rule}), e.g. {c.names[k]} ({share[k]:.0%})")
    top = float(share.max()) if len(share) else 0.0
    return Check("overlap", "pass", f"{len(c.names)} validation documents, none with >= {rule} "
                 f"(highest {top:.0%}; {c.too_short} shorter than {opt.ngram} tokens not checked)")


def check_masks(d: Path, meta: dict) -> Check:
    from tokenizers import Tokenizer

    try:
        pre_text, eot_text = template_markers(meta.get("template") or {})
    except ValueError as e:
        return Check("masks", "fail", str(e))
    tok = Tokenizer.from_file(str(d / meta["tokenizer"].get("file", "tokenizer.json")))
    pre = np.asarray(tok.encode(pre_text, add_special_tokens=False).ids)
    eot = np.asarray(tok.encode(eot_text, add_special_tokens=False).ids)
    last_only = bool((meta.get("template") or {}).get("last_turn_only", False))
    n = wrong = targets = text_only = 0
    first = None
    for split in ("train", "val"):
        for path, i, t, m in _sft_examples(d, meta, split):
            n += 1
            targets += int(m.sum())
            if not (np.isin(t, eot).any() or np.isin(t, pre[:1]).any()):
                # no template markup at all: plain text (a pretraining share), every token a target
                text_only += 1
                if not m.all():
                    wrong += 1
                    first = first or f"{path} example {i}: plain text (no template markup) but not every token is a target"
                continue
            exp = expected_mask(t, pre, eot, last_only)
            if not exp.any():
                wrong += 1
                first = first or f"{path} example {i}: no assistant turn found"
            elif not np.array_equal(exp, m):
                wrong += 1
                first = first or f"{path} example {i}: {describe_mismatch(m, exp)}"
    if n == 0:
        return Check("masks", "fail", "no examples")
    if wrong:
        return Check("masks", "fail", f"{wrong} of {n} examples' masks are not exactly their assistant turns; {first}")
    plain = f"; {text_only} plain-text examples (no template markup) fully targeted" if text_only else ""
    return Check("masks", "pass", f"{n} examples: the {targets} target tokens are exactly the assistant turns "
                 f"(after {pre_text!r}, through {eot_text!r}){plain}")


def check_training(d: Path, out: Path, opt: VerifyOptions, log) -> Check:
    try:
        from .train import train
    except ImportError as e:
        return Check("training", "fail", f"cannot train: {e} (install the project's train extra)")
    cfg = {"data": str(d), "out": str(out), "block_size": opt.block_size, "batch_size": opt.batch_size,
           "max_steps": opt.train_steps, "eval_every": opt.train_steps, "ckpt_every": opt.train_steps,
           "warmup_steps": max(1, opt.train_steps // 10), "seed": opt.seed, "resume": False,
           "threads": opt.threads, "progress": opt.progress, "eval_tokens": 20_000}
    s = train(cfg, log=log)
    a, b = s["val_initial"], s["val_final"]
    risen = [n for n, v in b["sources"].items() if v["loss"] >= a["sources"][n]["loss"]]
    per = ", ".join(f"{n} {v['loss']:.2f}" for n, v in b["sources"].items())
    bpb = f" ({a['bpb']:.3f} -> {b['bpb']:.3f} bits/byte)" if a.get("bpb") and b.get("bpb") else ""
    line = f"val loss {a['loss']:.3f} -> {b['loss']:.3f} nats/token{bpb} in {s['steps']} steps; per source: {per}"
    if b["loss"] >= a["loss"]:
        return Check("training", "fail", "validation loss did not fall: " + line)
    if risen:
        return Check("training", "fail", f"validation loss of {', '.join(risen)} did not fall: " + line)
    return Check("training", "pass", line)


# ----------------------------------------------------------------------------- driver


def verify_mixture(d: Path, out: Path, opt: VerifyOptions = VerifyOptions(), train: bool = True, log=print) -> list[Check]:
    """All checks of one mixture directory; the report goes to ``out/report.json``."""
    meta = read_meta(d)
    checks = [check_files(d, meta), check_tokenizer(d, meta)]
    usable = all(c.ok for c in checks)
    if meta["format"] == SFT_FORMAT:
        checks.append(check_masks(d, meta) if usable else Check("masks", "skip", "files or tokenizer failed"))
    else:
        checks.append(check_proportions(d, meta, opt) if usable else Check("proportions", "skip", "files or tokenizer failed"))
    checks.append(check_overlap(d, meta, opt) if usable else Check("overlap", "skip", "files or tokenizer failed"))
    if not train or opt.train_steps <= 0:
        checks.append(Check("training", "skip", "not requested"))
    elif not usable:
        checks.append(Check("training", "skip", "files or tokenizer failed"))
    else:
        checks.append(check_training(d, out / "train", opt, log))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"mixture": str(d), "options": asdict(opt),
                                                 "checks": [asdict(c) for c in checks]}, indent=1) + "\n")
    return checks


def verify(path: str | Path, out: str | Path | None = None, opt: VerifyOptions = VerifyOptions(),
           train: bool = True, log=print) -> dict[str, list[Check]]:
    """Verify every mixture under ``path`` (a run directory or one mixture directory).

    Reports go to ``out/<mixture>/`` (default: ``<run>/verify/``).
    """
    mixtures = find_mixtures(path)
    if not mixtures:
        raise DataError(f"{path}: no mixture (no meta.json of a mix or SFT stage) found")
    base = Path(out) if out else (Path(path) if not (Path(path) / "meta.json").is_file() else Path(path).parent) / "verify"
    return {str(d): verify_mixture(d, base / d.name, opt, train, log) for d in mixtures}


def format_checks(results: dict[str, list[Check]]) -> list[str]:
    lines = []
    for d, checks in results.items():
        lines.append(f"{d}:")
        lines.extend(f"  {c.status.upper():4} {c.name}: {c.reason}" for c in checks)
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m trainer.verify", description="Verify the mixtures of a run.")
    ap.add_argument("run", help="run directory (or one mixture directory)")
    ap.add_argument("--out", help="where reports and the short training run go (default RUN/verify)")
    ap.add_argument("--train-steps", type=int, default=VerifyOptions.train_steps, help="0 skips the training check")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        res = verify(a.run, a.out, VerifyOptions(train_steps=a.train_steps, threads=a.threads))
    except (DataError, OSError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print("\n".join(format_checks(res)))
    return 0 if all(c.ok for cs in res.values() for c in cs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
