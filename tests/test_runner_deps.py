"""A global stage's extra inputs (models) count toward resume: a changed model makes a
finished stage stale instead of being silently reused."""

import pytest

from curate.errors import StageStateError
from curate.runner import run_pipeline
from tests.warcfixtures import write_warc

pytest.importorskip("kenlm")

ARPA = """\\data\\
ngram 1=5
ngram 2=1

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t0
-1.0\t</s>\t0
-0.5\tthe\t0
-{w}\triver\t0

\\2-grams:
-0.2\t<s> the

\\end\\
"""


def test_changed_model_is_detected(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    write_warc(inp / "a.warc.gz")
    model = tmp_path / "en.arpa"
    model.write_text(ARPA.format(w="0.7"))
    spec = {"pipeline": "t", "executor": "local", "stages": {
        "extract": {"input": {"paths": [str(inp)]}},
        "perplexity": {"input": "extract", "config": {"model_paths": {"en": str(model)}, "default_lang": "en"}},
    }}
    first = run_pipeline(spec, tmp_path / "run", log=lambda *_: None)["perplexity"]
    assert first["kept_rows"] + first["rejected_rows"] == first["input_rows"] > 0
    logs = []
    run_pipeline(spec, tmp_path / "run", log=logs.append)
    assert any("[perplexity] already finished" in x for x in logs)
    model.write_text(ARPA.format(w="0.9"))
    with pytest.raises(StageStateError, match="perplexity"):
        run_pipeline(spec, tmp_path / "run", log=lambda *_: None)
