"""A small GPT: pre-norm blocks, rotary or learned positions, tied embeddings, SDPA attention.

``GPT(config)(idx)`` returns logits ``(B, T, vocab)``. Packed examples can be kept from
attending to each other: pass ``segments`` (an id per token; attention stays inside a segment)
and ``positions`` (restarting at 0 at each segment start).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKPOINT_FORMAT = "curate-trainer-ckpt/1"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model.

    Attributes:
        vocab_size: rows of the (tied) embedding matrix.
        block_size: longest context.
        n_layer, n_head, n_embd: depth, heads, width (``n_embd`` divisible by ``n_head``).
        pos: ``rope`` (rotary, applied to queries and keys) or ``learned`` (an embedding table).
        dropout: on attention weights and residual branches (0 for the tiny runs).
        rope_base: rotary base frequency.
    """

    vocab_size: int
    block_size: int = 128
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    pos: Literal["rope", "learned"] = "rope"
    dropout: float = 0.0
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rotary positions need an even head size")


def _rope_tables(head: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, head, 2, dtype=torch.float32) / head))
    ang = torch.outer(torch.arange(length, dtype=torch.float32), inv)
    return ang.cos(), ang.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the two halves of the head dimension; cos/sin are (B or 1, 1, T, head/2)."""
    a, b = x.float().chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, rope, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.out = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope, mask):
        x = x + self.drop(self.attn(self.ln1(x), rope, mask))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
        if cfg.pos == "rope":
            cos, sin = _rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "out.weight")):  # GPT-2: scaled residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        segments: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab)``.

        Args:
            idx: token ids ``(B, T)``.
            segments: optional ``(B, T)`` segment ids; a token attends only to earlier tokens of
                its own segment (block-diagonal causal attention).
            positions: optional ``(B, T)`` position ids (default ``0..T-1``).
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        if positions is None:
            positions = torch.arange(T, device=idx.device).unsqueeze(0)
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)
        else:
            rope = (self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1))
        mask = None
        if segments is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
            mask = (segments.unsqueeze(2) == segments.unsqueeze(1)) & causal
            mask = mask.unsqueeze(1)
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x, rope, mask)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied output embedding


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6N plus the attention term 12·L·d·T."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.n_embd * cfg.block_size


def model_state(model: nn.Module) -> dict:
    """State dict without the ``_orig_mod.`` prefix that ``torch.compile`` adds."""
    return {k.removeprefix("_orig_mod."): v for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, model: nn.Module, extra: dict) -> None:
    """Write ``{"format", "model_config", "model", **extra}`` atomically (temp file + rename)."""
    path = Path(path)
    cfg = (model._orig_mod if hasattr(model, "_orig_mod") else model).config
    blob = {"format": CHECKPOINT_FORMAT, "model_config": asdict(cfg), "model": model_state(model), **extra}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(blob, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """The raw checkpoint dict; ValueError when the file is not a trainer checkpoint."""
    blob = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a trainer checkpoint ({CHECKPOINT_FORMAT})")
    return blob


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[GPT, ModelConfig]:
    """The model of a checkpoint (in eval mode) and its config."""
    blob = read_checkpoint(path, device)
    cfg = ModelConfig(**blob["model_config"])
    model = GPT(cfg).to(device)
    model.load_state_dict(blob["model"])
    model.eval()
    return model, cfg
