"""One quality rule, written the way a user would write it: a class, no edit to curate."""

from __future__ import annotations

import pyarrow as pa

from filters.rules import Rule


class NoShouting(Rule):
    """Rejects pages written mostly in capitals.

    The signal is the share of capitals among cased letters; pages with fewer than
    ``min_letters`` cased letters (Chinese, Japanese, numbers) have no signal and pass.
    """

    code = "no_shouting"
    meaning = "more than max_caps_ratio of the cased letters are capitals (curate_shouty plugin)"
    params = {"max_caps_ratio": (float | None, 0.5), "min_letters": (int, 20)}
    signals = {"shouty_caps_ratio": pa.float32()}

    def score(self, doc) -> dict:
        upper = lower = 0
        for c in doc.text:
            if c.isupper():
                upper += 1
            elif c.islower():
                lower += 1
        cased = upper + lower
        return {"shouty_caps_ratio": upper / cased if cased >= self.config.min_letters else None}

    def keep(self, signals) -> bool:
        ratio = signals["shouty_caps_ratio"]
        return ratio is None or ratio <= self.threshold
