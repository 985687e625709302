# Language identification (stages/langid.py, filters/langid.py). `make langid` (main Makefile)
# runs the pipeline up to this stage.
.PHONY: eval-lid bench-langid test-langid

# Accuracy of the raw lid.176 model and of the stage on ../shared/eval/lid, scored by its
# score.py: overall, by length, by confusable group, per language, on the dev and test halves.
# EVAL_LID_ARGS: e.g. --details, or --config '{"group_below": {"iberian": 0.7}}'
eval-lid: setup
	$(PY) bench/eval_lid.py $(EVAL_LID_ARGS)

# docs/s per core of the stage vs a raw fastText predict loop on the same documents (eval
# sentences and extracted debian-docs pages); writes build/bench/langid.json.
bench-langid: setup
	$(PY) bench/bench_langid.py $(BENCH_LANGID_ARGS)

test-langid: setup
	$(PY) -m pytest -q tests/test_langid.py
