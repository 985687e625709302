"""Print the stages of a pipeline up to and including one stage (used by the Makefile)."""

import sys

from .config import load_pipeline


def upto(path: str, last: str) -> list[str]:
    names = list(load_pipeline(path).stages)
    if last not in names:
        raise SystemExit(f"{path} has no stage {last!r} (have {', '.join(names)})")
    return names[: names.index(last) + 1]


if __name__ == "__main__":
    print(" ".join(upto(sys.argv[1], sys.argv[2])))
