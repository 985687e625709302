"""Expected SFT loss masks from the tokens themselves: 1 exactly on every assistant turn.

An assistant turn starts after the template's assistant header and ends with its end-of-turn
token, which is a target too. The SFT stage writes the template's ``name``, ``end_of_turn``
and ``last_turn_only`` (only the final reply is trained on) into ``meta.json``; the header
is ``assistant_prefix`` there when given, else known by the name for the shipped templates
(``chatml``, ``llama3``)."""

from __future__ import annotations

import numpy as np

KNOWN_TEMPLATES = {
    "chatml": ("<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}


def template_markers(template: dict) -> tuple[str, str]:
    """(assistant prefix text, end-of-turn text) of a template entry; ValueError when unknown."""
    pre, eot = template.get("assistant_prefix"), template.get("end_of_turn")
    if pre and eot:
        return pre, eot
    name = str(template.get("name", "")).lower()
    for key, (known_pre, known_eot) in KNOWN_TEMPLATES.items():
        if key in name.replace("-", "").replace("_", ""):
            return pre or known_pre, eot or known_eot
    raise ValueError(f"template {template.get('name')!r}: meta.json gives no assistant_prefix/end_of_turn "
                     f"and the name is none of {sorted(KNOWN_TEMPLATES)}")


def expected_mask(tokens: np.ndarray, prefix: np.ndarray, eot: np.ndarray, last_only: bool = False) -> np.ndarray:
    """1 on the tokens after each occurrence of ``prefix`` up to and including the next ``eot``."""
    out = np.zeros(len(tokens), dtype=np.uint8)
    starts = _find(tokens, prefix) + len(prefix)
    if last_only and len(starts):
        starts = starts[-1:]
    ends = _find(tokens, eot) + len(eot)
    for s in starts:
        later = ends[ends > s]
        out[s : int(later[0]) if len(later) else len(tokens)] = 1
    return out


def _find(tokens: np.ndarray, pat: np.ndarray) -> np.ndarray:
    """Start positions of ``pat`` in ``tokens``."""
    k = len(pat)
    if k == 0 or len(tokens) < k:
        return np.zeros(0, dtype=np.int64)
    ok = tokens[: len(tokens) - k + 1] == pat[0]
    for j in range(1, k):
        ok &= tokens[j : len(tokens) - k + 1 + j] == pat[j]
    return np.flatnonzero(ok)


def describe_mismatch(actual: np.ndarray, expected: np.ndarray) -> str:
    """How a mask differs: shifted by a token, or where it first differs."""
    for shift in (1, -1):
        if len(actual) > 1 and np.array_equal(np.roll(expected, shift)[1:-1], actual[1:-1]):
            return f"mask is the assistant spans shifted by {shift:+d} token"
    i = int(np.flatnonzero(actual != expected)[0])
    what = "a non-assistant token is a target" if actual[i] else "an assistant token is not a target"
    return f"first differs at token {i}: {what}"
