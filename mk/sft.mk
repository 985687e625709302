# SFT mixtures (stages/sft_*.py, manifests/sft.yaml). `make sft` runs the demo pipeline first
# (its KenLM models and pretraining mixture in runs/demo feed the SFT run), then the SFT pipeline
# into $(SFT_RUN). data/sft is a link to ../shared/sft when that exists, else the generated set.
SFT_RUN ?= runs/sft
.PHONY: sft sft-data bench-sft test-sft

sft-data: setup
	@if [ -d ../shared/sft ]; then \
	  mkdir -p data && rm -rf data/sft && ln -s ../../shared/sft data/sft && echo "data/sft -> ../shared/sft"; \
	elif [ ! -d data/sft ] || [ -L data/sft ]; then \
	  rm -f data/sft && $(PY) -m samples.sftgen data/sft; \
	fi

sft: setup lmplz sample sft-data
	$(CURATE) run manifests/demo.yaml --run runs/demo
	$(CURATE) run manifests/sft.yaml --run $(SFT_RUN)

# Examples/s of the whole SFT pipeline and of sft-mix vs a plain render + tokenise loop.
bench-sft: setup
	$(PY) bench/bench_sft.py $(BENCH_SFT_ARGS)

test-sft: setup
	$(PY) -m pytest -q tests/test_sft_formats.py tests/test_sft_template.py tests/test_sft_decontam.py tests/test_sft_clean.py tests/test_sft_pipeline.py
