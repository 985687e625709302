# curate: one target per stage, plus setup, demo, test and bench.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo
PIPELINE ?= manifests/demo.yaml
SAMPLE := data/sample
export CURATE_NO_PROGRESS ?=

.PHONY: setup demo test sample bench bench-extract eval-extract clean help \
        extract langid quality dedup pii mix

help:
	@echo "make demo | make test | make bench | make <stage> (extract langid quality dedup pii mix) | make sft"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[sample,test,train]'
	touch $@

sample: $(SAMPLE)/labels.jsonl

$(SAMPLE)/labels.jsonl: $(STAMP) samples/samplegen.py
	$(PY) -m samples.samplegen $(SAMPLE)

demo: setup lmplz sample sft-data
	$(CURATE) run $(PIPELINE) --run $(RUN)
	$(CURATE) report $(RUN)
	$(CURATE) run manifests/sft.yaml --run $(SFT_RUN)

# One target per stage: runs the pipeline up to and including that stage (resumes finished ones).
extract langid quality dedup pii mix: setup lmplz sample
	$(CURATE) run $(PIPELINE) --run $(RUN) $(foreach s,$(shell $(PY) -m curate.pipeline_stages $(PIPELINE) $@),--stage $(s))

test: setup lmplz browser
	$(PY) -m pytest -q

bench: bench-extract bench-quality bench-dedup bench-pii bench-mix bench-sft bench-e2e

bench-extract: setup
	$(PY) bench/bench_extract.py

eval-extract: setup
	$(PY) bench/eval_extract.py

clean:
	rm -rf runs data build

-include mk/*.mk
