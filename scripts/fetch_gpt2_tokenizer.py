"""Set-up: GPT-2's byte-level BPE as a HF ``tokenizer.json``, from a pinned PyPI download.

GPT-2's BPE ranks ship (MIT licence) inside the openai-whisper source distribution as
``whisper/assets/gpt2.tiktoken`` (one ``base64(token bytes) rank`` per line). This script
downloads that sdist with pip (pinned version, checked SHA-256), reads that one file from the
archive and converts the ranks into a ``tokenizer.json``:

* vocabulary: each token's bytes written in GPT-2's byte-level alphabet, id = rank, plus
  ``<|endoftext|>`` = 50256 (a special token);
* merges: for every multi-byte token, the two tokens that BPE restricted to lower ranks
  splits it into, in rank order (BPE by merge rank then reproduces tiktoken's ranks);
* GPT-2's pre-tokenizer regex and byte-level decoding (HF ``ByteLevel``).

Usage: ``python scripts/fetch_gpt2_tokenizer.py [OUT_DIR]`` (default ``build/gpt2``). Nothing
is done when ``OUT_DIR/tokenizer.json`` was already made from the pinned sdist. When the
download fails (no network) it says so and exits 0 unless ``--strict``; tests that need the
file then skip.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters.vocab import byte_chars  # noqa: E402

WHISPER_VERSION = "20250625"
SDIST = f"openai_whisper-{WHISPER_VERSION}.tar.gz"
SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
MEMBER = f"openai_whisper-{WHISPER_VERSION}/whisper/assets/gpt2.tiktoken"
EOS = "<|endoftext|>"


def read_ranks(text: str) -> dict[bytes, int]:
    """``base64 rank`` lines -> token bytes -> rank (ranks must be 0..n-1)."""
    ranks = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        b64, rank = line.split()
        ranks[base64.b64decode(b64)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("gpt2.tiktoken ranks are not 0..n-1")
    return ranks


def split_by_ranks(token: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Byte-pair merge ``token`` using only tokens ranked below it (lowest rank first)."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < limit and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def tokenizer_json(ranks: dict[bytes, int]) -> str:
    """The HF ``tokenizer.json`` text for GPT-2's ranks."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    bc = byte_chars()

    def s(b: bytes) -> str:
        return "".join(bc[x] for x in b)

    vocab = {s(t): r for t, r in ranks.items()}
    merges = []
    for t, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(t) < 2:
            continue
        parts = split_by_ranks(t, ranks)
        if len(parts) != 2:
            raise ValueError(f"token {t!r} does not split into two lower-ranked tokens: {parts}")
        merges.append((s(parts[0]), s(parts[1])))
    vocab[EOS] = len(ranks)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    return tok.to_str(pretty=True)


def fetch_sdist(dest: Path) -> Path:
    """Download the pinned sdist into ``dest`` (pip, no dependencies) and check its SHA-256."""
    path = dest / SDIST
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
               f"openai-whisper=={WHISPER_VERSION}", "-d", str(dest)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        path.unlink()
        raise ValueError(f"{SDIST}: sha256 {digest} is not the pinned {SDIST_SHA256}")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "build" / "gpt2"))
    ap.add_argument("--strict", action="store_true", help="exit non-zero when the download fails")
    args = ap.parse_args()
    out = Path(args.out)
    target, stamp = out / "tokenizer.json", out / "source.json"
    want = {"sdist": SDIST, "sha256": SDIST_SHA256, "member": MEMBER}
    try:
        if target.exists() and json.loads(stamp.read_text()) == want:
            print(f"{target}: up to date")
            return 0
    except (OSError, ValueError):
        pass
    out.mkdir(parents=True, exist_ok=True)
    try:
        sdist = fetch_sdist(out)
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        print(f"warning: could not fetch GPT-2's BPE ranks ({e}); GPT-2 tests will skip", file=sys.stderr)
        return 1 if args.strict else 0
    with tarfile.open(sdist) as tar:
        text = tar.extractfile(MEMBER).read().decode("ascii")
    blob = tokenizer_json(read_ranks(text))
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp", encoding="utf-8") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, target)
    stamp.write_text(json.dumps(want, indent=2) + "\n")
    print(f"{target}: GPT-2 BPE, {len(json.loads(blob)['model']['vocab'])} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
