# Quality heuristics, KenLM training and perplexity (stages/quality.py, stages/train_lm.py,
# stages/perplexity.py). `make quality` (main Makefile) runs the pipeline up to the heuristics.
.PHONY: lmplz bench-quality test-quality train-lm perplexity

# KenLM's lmplz and build_binary, built from the kenlm sdist into $(VENV)/bin (idempotent;
# installs the Debian build packages when missing).
lmplz: setup
	VENV=$(VENV) bash scripts/build_lmplz.sh

# Pipeline up to and including train-lm / perplexity (finished stages are resumed).
train-lm perplexity: setup lmplz sample
	$(CURATE) run $(PIPELINE) --run $(RUN) $(foreach s,$(shell $(PY) -m curate.pipeline_stages $(PIPELINE) $@),--stage $(s))

# docs/s per core of the quality and perplexity stages vs the raw kenlm score loop (after
# the langid benchmark). BENCH_QUALITY_ARGS: e.g. --repeat 8 --rounds 5
bench-quality: bench-langid lmplz sample
	$(PY) bench/bench_quality.py --sample $(SAMPLE) $(BENCH_QUALITY_ARGS)

test-quality: setup lmplz
	$(PY) -m pytest -q tests/test_heuristics.py tests/test_kenlm.py tests/test_quality_sample.py
