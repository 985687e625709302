# PII scrubbing (stages/pii.py, filters/pii.py). `make pii` (main Makefile) runs the pipeline up to it.
.PHONY: bench-pii eval-pii test-pii

# MB/s per core of the pii stage vs a naive one-regex-per-type loop on the same documents
# (the ../shared/eval/pii set and the text of Debian HTML pages). BENCH_PII_ARGS: e.g. --web-docs 0
bench-pii: setup
	$(PY) bench/bench_pii.py $(BENCH_PII_ARGS)

# The eval set's scorer on the scrubbed documents (recall per type, decoys, collateral).
# EVAL_PII_ARGS: e.g. --policy pseudonym, --naive (the baseline), --show-misses
eval-pii: setup
	$(PY) bench/eval_pii.py $(EVAL_PII_ARGS)

test-pii: setup
	$(PY) -m pytest -q tests/test_pii.py tests/test_pii_props.py tests/test_pii_stage.py
