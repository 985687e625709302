"""Train the GPT of ``model.py`` on a mixture directory; resumable, with loss-spike rollback.

``python -m trainer.train --config run.yaml --data runs/demo/mix --out runs/demo/train``
(every :class:`TrainConfig` field is also a flag: ``--max-steps 200``). The run directory gets
``ckpt.pt`` (model, optimiser, RNG, next batch index, skipped batches), ``metrics.jsonl``
(one line per step, evaluation, spike and resume) and ``summary.json``.

As large runs do: AdamW (weight decay 0.1 on matrices), clipping at 1.0, linear warm-up then
cosine decay; on CUDA bf16 autocast, fused AdamW, TF32 and (``compile: auto``) torch.compile.
A step whose loss exceeds ``spike_factor`` x the median of the last ``spike_window`` steps is
not applied: the run rolls back to its last checkpoint and skips the offending batches.
Losses are reported per token (nats) and in bits per byte of the text they stand for.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .data import Batch, DataError, open_data, read_val_sets, sha256_file, token_bytes, windows
from .model import GPT, ModelConfig, flops_per_token, read_checkpoint, save_checkpoint
from .resize import grow_vocab, read_id_map

LN2 = math.log(2.0)
# Dense bf16 peak FLOP/s by device name, for MFU (``peak_flops`` overrides).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12}


class TrainConfig(BaseModel):
    """Everything a run needs; YAML keys and CLI flags have these names (unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str
    out: str
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(2, ge=1)
    n_embd: int = Field(64, ge=2)
    block_size: int = Field(64, ge=2)
    pos: Literal["rope", "learned"] = "rope"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    device: str = "auto"
    threads: int = Field(0, ge=0, description="CPU threads for torch (0: torch's default)")
    compile: Literal["auto", "on", "off"] = "auto"
    eval_every: int = Field(50, ge=1)
    eval_tokens: int = Field(50_000, ge=0, description="validation targets per source (0: all)")
    eval_batch: int = Field(16, ge=1)
    eval_from: list[str] = Field(default_factory=list, description="more mixture dirs whose val sets are evaluated")
    ckpt_every: int = Field(50, ge=1)
    spike_factor: float = Field(2.0, ge=0, description="0 switches spike detection off")
    spike_window: int = Field(20, ge=1)
    spike_skip: int = Field(0, ge=0, description="batches before the offending one also skipped")
    max_rollbacks: int = Field(5, ge=0)
    init_from: str | None = None
    id_map: str | None = None
    resume: bool = True
    progress: bool = True
    peak_flops: float | None = None
    fault_kill_at_step: int | None = Field(None, description="test hook: SIGKILL itself after this step")
    fault_spike_batches: list[int] = Field(default_factory=list, description="test hook: inject a spike on these batches")
    fault_spike_scale: float = Field(10.0, gt=0, description="test hook: their loss (and gradient) is multiplied by this")


# Settings a resumed run may change; any other difference from the checkpoint's config is an error.
RESUME_MAY_CHANGE = {"max_steps", "eval_every", "ckpt_every", "progress", "threads", "resume", "peak_flops",
                     "fault_kill_at_step", "fault_spike_batches", "fault_spike_scale", "max_rollbacks", "compile"}


class TrainError(Exception):
    """A run that cannot start or continue (one line)."""


# ----------------------------------------------------------------------------- set-up


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    t = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * t))


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


def build_model(cfg: TrainConfig, vocab: int, data_tok_sha: str, device: torch.device) -> GPT:
    """A fresh model, or ``init_from``'s weights (grown with ``id_map`` when given)."""
    if not cfg.init_from:
        return GPT(ModelConfig(vocab_size=vocab, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                               n_embd=cfg.n_embd, pos=cfg.pos, dropout=cfg.dropout)).to(device)
    blob = read_checkpoint(cfg.init_from, "cpu")
    model = GPT(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["model"])
    base_sha = blob.get("tokenizer_sha256")
    if cfg.id_map:
        m = read_id_map(cfg.id_map)
        model = grow_vocab(model, m, base_sha)
        base_sha = m.get("tokenizer_sha256", base_sha)
    if base_sha and base_sha != data_tok_sha:
        raise TrainError(f"{cfg.init_from} was trained with tokenizer {base_sha[:12]}, the data uses {data_tok_sha[:12]}"
                         + ("" if cfg.id_map else " (an extended vocabulary needs id_map)"))
    if model.config.block_size < cfg.block_size:
        raise TrainError(f"{cfg.init_from} has block_size {model.config.block_size} < the run's {cfg.block_size}")
    return model.to(device)


def device_tensors(b: Batch, device: torch.device) -> dict:
    """The batch's arrays as tensors on ``device`` (pinned, asynchronous copies on CUDA)."""
    def move(a):
        if a is None:
            return None
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

    return {"x": move(b.x), "y": move(b.y), "w": move(b.w), "seg": move(b.seg), "pos": move(b.pos)}


def token_nll(model, t: dict, autocast) -> torch.Tensor:
    """Per-target negative log-likelihood in nats ``(B, T)``, float32."""
    with autocast:
        logits = model(t["x"], segments=t["seg"], positions=t["pos"])
    return F.cross_entropy(logits.float().flatten(0, 1), t["y"].flatten(), reduction="none").view_as(t["y"]).float()


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, data, cfg: TrainConfig, device, autocast, nbytes: torch.Tensor, batches=None) -> dict:
    """Loss per token and bits per byte per validation source, and over all of them.

    Args:
        batches: ``(source, Batch)`` pairs to use instead of ``data``'s own validation sets.
    """
    model.eval()
    acc: dict[str, list[float]] = {}
    it = batches if batches is not None else data.val_batches(cfg.eval_tokens or None, cfg.eval_batch)
    for extra in cfg.eval_from:
        name = Path(extra).name
        sets = read_val_sets(extra, data.meta["tokenizer"]["sha256"])
        it = itertools.chain(it, ((f"{name}/{s}", b) for s, v in sets.items()
                                  for b in windows(v[: (cfg.eval_tokens or len(v)) + 1], cfg.block_size, cfg.eval_batch)))
    for src, b in it:
        t = device_tensors(b, device)
        w = t["w"] if t["w"] is not None else torch.ones_like(t["y"], dtype=torch.float32)
        nll = token_nll(model, t, autocast)
        a = acc.setdefault(src, [0.0, 0.0, 0.0])
        a[0] += float((nll * w).sum())
        a[1] += float(w.sum())
        a[2] += float((nbytes[t["y"]] * w).sum())
    model.train()
    out = {s: _loss_entry(*a) for s, a in sorted(acc.items())}
    tot = [sum(a[i] for a in acc.values()) for i in range(3)]
    return {"sources": out, **_loss_entry(*tot)}


def _loss_entry(nll: float, n: float, nb: float) -> dict:
    return {"loss": nll / max(n, 1.0), "bpb": nll / LN2 / nb if nb else None, "tokens": int(n)}


# ----------------------------------------------------------------------------- the run


class Run:
    """One training run in ``cfg.out``: set up, resume if a checkpoint is there, train."""

    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.out / "ckpt.pt"
        self.metrics_path = self.out / "metrics.jsonl"
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        torch.manual_seed(cfg.seed)
        self.data = open_data(cfg.data, cfg.block_size, cfg.batch_size, cfg.seed)
        tok = self.data.meta["tokenizer"]
        self.tok_sha = tok["sha256"]
        if sha256_file(self.data.tokenizer_path) != self.tok_sha:
            raise TrainError(f"{self.data.tokenizer_path}: sha256 differs from meta.json's tokenizer.sha256")
        self.nbytes = torch.from_numpy(token_bytes(self.data.tokenizer_path, self.data.vocab_size)).float().to(self.device)
        self.model = build_model(cfg, self.data.vocab_size, self.tok_sha, self.device)
        if self.model.config.vocab_size != self.data.vocab_size:
            raise TrainError(f"model vocabulary {self.model.config.vocab_size} != data vocabulary {self.data.vocab_size}")
        self.opt = make_optimizer(self.model, cfg, self.device)
        use_compile = cfg.compile == "on" or (cfg.compile == "auto" and cuda)
        self.fwd = torch.compile(self.model) if use_compile else self.model
        self.n_params = self.model.num_params()
        self.fpt = flops_per_token(self.model.config, self.n_params)
        self.peak = cfg.peak_flops or (_peak_flops(self.device) if cuda else None)
        self.state = {"step": 0, "cursor": 0, "skip": [], "losses": [], "rollbacks": 0, "metrics_lines": 0}
        self.events: list[dict] = []

    # --- checkpoints

    def save(self) -> None:
        self._mf.flush()
        extra = {
            "tokenizer_sha256": self.tok_sha,
            "train_config": self.cfg.model_dump(mode="json"),
            "optimizer": self.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
            "state": dict(self.state),
        }
        save_checkpoint(self.ckpt, self.model, extra)

    def restore(self) -> dict:
        blob = read_checkpoint(self.ckpt, "cpu")
        old = blob.get("train_config", {})
        changed = [k for k, v in self.cfg.model_dump(mode="json").items() if k not in RESUME_MAY_CHANGE and old.get(k) != v]
        if changed:
            k = changed[0]
            raise TrainError(f"{self.ckpt} was written with {k}={old.get(k)!r}, this run has {getattr(self.cfg, k)!r}; "
                             "use another --out or --no-resume")
        self.model.load_state_dict(blob["model"])
        self.opt.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng"]["torch"])
        if blob["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
        return dict(blob["state"])

    def _truncate_metrics(self, n_lines: int) -> None:
        lines = self.metrics_path.read_text().splitlines(keepends=True)[:n_lines] if self.metrics_path.exists() else []
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.metrics_path)

    def emit(self, rec: dict) -> None:
        self._mf.write(json.dumps(rec, sort_keys=True) + "\n")
        self.state["metrics_lines"] += 1

    # --- batches

    def next_batches(self) -> list[int]:
        """The next ``grad_accum`` batch indices, passing over skipped ones."""
        skip, out = set(self.state["skip"]), []
        while len(out) < self.cfg.grad_accum:
            b = self.state["cursor"]
            self.state["cursor"] += 1
            if b not in skip:
                out.append(b)
        return out

    def load_batch(self, b: int) -> tuple[Batch, float]:
        """Batch ``b`` and its loss scale (1, or ``fault_spike_scale`` for an injected spike)."""
        return self.data.batch(b), self.cfg.fault_spike_scale if b in self.cfg.fault_spike_batches else 1.0

    # --- the loop

    def run(self) -> dict:
        cfg = self.cfg
        resumed = cfg.resume and self.ckpt.exists()
        if resumed:
            self.state = self.restore()
            self._truncate_metrics(self.state["metrics_lines"])
            self._mf = open(self.metrics_path, "a")
            self.log(f"resumed from {self.ckpt} at step {self.state['step']}")
        else:
            self.metrics_path.write_text("")
            self._mf = open(self.metrics_path, "a")
            self.emit({"event": "start", "step": 0, "params": self.n_params, "device": self.device.type,
                       "train_tokens": self.data.train.n if hasattr(self.data, "train") else None,
                       "rows_per_epoch": self.data.n_rows})
            self.emit({"event": "eval", "step": 0, **evaluate(self.fwd, self.data, cfg, self.device, self.autocast, self.nbytes)})
            self.save()
        try:
            return self._loop()
        finally:
            self._mf.close()

    def _loop(self) -> dict:
        cfg = self.cfg
        tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
        with _progress(cfg) as bar:
            task = bar.add_task("train", total=cfg.max_steps, completed=self.state["step"], loss=float("nan"), tps=0.0)
            while self.state["step"] < cfg.max_steps:
                step = self.state["step"] + 1
                t0 = time.perf_counter()
                lr = lr_at(cfg, step - 1)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                batches = self.next_batches()
                acc = torch.zeros(3, dtype=torch.float64, device=self.device)  # nll, targets, bytes (one sync)
                for b in batches:
                    batch, scale = self.load_batch(b)
                    t = device_tensors(batch, self.device)
                    nll = token_nll(self.fwd, t, self.autocast) * scale
                    w = t["w"] if t["w"] is not None else torch.ones_like(nll)
                    ((nll * w).sum() / w.sum().clamp(min=1.0) / len(batches)).backward()
                    acc += torch.stack([(nll.detach() * w).sum(), w.sum(), (self.nbytes[t["y"]] * w).sum()]).double()
                nll_sum, n_sum, bytes_sum = acc.tolist()
                loss = nll_sum / max(n_sum, 1.0)
                if self._is_spike(loss):
                    self._rollback(step, loss, batches)
                    continue
                gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                self.state["step"] = step
                self.state["losses"] = (self.state["losses"] + [loss])[-cfg.spike_window:]
                rec = {"event": "train", "step": step, "loss": loss, "bpb": nll_sum / LN2 / bytes_sum if bytes_sum else None,
                       "lr": lr, "grad_norm": gnorm, "batches": batches, "tokens": step * tokens_per_step,
                       "tokens_per_s": tokens_per_step / dt}
                if self.peak:
                    rec["mfu"] = self.fpt * tokens_per_step / dt / self.peak
                self.emit(rec)
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    ev = evaluate(self.fwd, self.data, cfg, self.device, self.autocast, self.nbytes)
                    self.emit({"event": "eval", "step": step, **ev})
                if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                    self.save()
                bar.update(task, completed=step, loss=loss, tps=rec["tokens_per_s"])
                if cfg.fault_kill_at_step == step:
                    self._mf.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        return self._summary()

    def _is_spike(self, loss: float) -> bool:
        cfg, hist = self.cfg, self.state["losses"]
        if cfg.spike_factor <= 0 or len(hist) < cfg.spike_window:
            return False
        return loss > cfg.spike_factor * float(np.median(hist)) or not math.isfinite(loss)

    def _rollback(self, step: int, loss: float, batches: list[int]) -> None:
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        median = float(np.median(self.state["losses"]))
        bad = sorted(set(range(min(batches) - cfg.spike_skip, min(batches))) | set(batches))
        bad = [b for b in bad if b >= 0]
        skip = sorted(set(self.state["skip"]) | set(bad))
        rollbacks = self.state["rollbacks"] + 1
        if rollbacks > cfg.max_rollbacks:
            raise TrainError(f"loss spike at step {step} after {cfg.max_rollbacks} rollbacks: giving up")
        self.state = self.restore()
        self.state["skip"], self.state["rollbacks"] = skip, rollbacks
        self._mf.close()
        self._truncate_metrics(self.state["metrics_lines"])
        self._mf = open(self.metrics_path, "a")
        ev = {"event": "spike", "step": step, "loss": loss, "median": median, "factor": cfg.spike_factor,
              "batches": bad, "sources": {str(b): self.data.batch_sources(b) for b in bad},
              "rolled_back_to": self.state["step"]}
        self.events.append(ev)
        self.emit(ev)
        self.log(f"loss spike at step {step}: {loss:.3f} > {cfg.spike_factor} x median {median:.3f}; "
                 f"rolled back to step {self.state['step']}, skipping batches {bad} (sources {ev['sources']})")

    def _summary(self) -> dict:
        recs = [json.loads(x) for x in self.metrics_path.read_text().splitlines()]
        evals = [r for r in recs if r["event"] == "eval"]
        trains = [r for r in recs if r["event"] == "train"]
        s = {"steps": self.state["step"], "params": self.n_params, "device": self.device.type,
             "val_initial": evals[0] if evals else None, "val_final": evals[-1] if evals else None,
             "train_loss_final": trains[-1]["loss"] if trains else None,
             "spikes": [r for r in recs if r["event"] == "spike"], "skipped_batches": self.state["skip"],
             "tokens_per_s": float(np.median([r["tokens_per_s"] for r in trains])) if trains else None}
        if self.peak and trains:
            s["mfu"] = float(np.median([r["mfu"] for r in trains]))
        (self.out / "summary.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
        return s


def _peak_flops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _progress(cfg: TrainConfig):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    off = not cfg.progress or bool(os.environ.get("CURATE_NO_PROGRESS"))
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=off)


def train(cfg: TrainConfig | dict, log=print) -> dict:
    """Run (or resume) training; returns the summary (also in ``<out>/summary.json``)."""
    if isinstance(cfg, dict):
        cfg = TrainConfig(**cfg)
    return Run(cfg, log).run()


# ----------------------------------------------------------------------------- command line


def load_config(path: str | None, overrides: dict) -> TrainConfig:
    """YAML file (optional) then CLI overrides; unknown keys and bad values are one-line errors."""
    data = {}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise TrainError(f"{path}: a training config is a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        first = e.errors()[0]
        raise TrainError(f"{path or 'flags'}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML file with TrainConfig keys")
    for name, f in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = f.annotation
        if ann is bool:
            ap.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif ann == list[int]:
            ap.add_argument(flag, dest=name, type=int, nargs="*", default=None)
        elif ann == list[str]:
            ap.add_argument(flag, dest=name, nargs="*", default=None)
        elif ann in (int, float):
            ap.add_argument(flag, dest=name, type=ann, default=None)
        elif ann == float | None:
            ap.add_argument(flag, dest=name, type=float, default=None)
        elif ann == int | None:
            ap.add_argument(flag, dest=name, type=int, default=None)
        else:
            ap.add_argument(flag, dest=name, default=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = vars(arg_parser().parse_args(argv))
    try:
        cfg = load_config(args.pop("config"), args)
        s = train(cfg)
    except (TrainError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fin = s["val_final"] or {}
    print(f"steps {s['steps']}  val loss {fin.get('loss', float('nan')):.4f} nats/token, "
          f"{fin.get('bpb') or float('nan'):.4f} bits/byte  median {s['tokens_per_s'] or 0:,.0f} tok/s"
          + (f"  MFU {s['mfu']:.1%}" if s.get("mfu") is not None else "") + f"  -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
