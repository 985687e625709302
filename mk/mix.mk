# Mixing and tokenisation (stages/mix.py). `make mix` (main Makefile) runs the pipeline up to it.
.PHONY: bench-mix test-mix

# Tokenise+pack tokens/s with 1 and 2 Ray workers vs a plain encode_batch loop.
# BENCH_MIX_ARGS: e.g. --input runs/demo/dedup  or  --shards 4
bench-mix: setup
	$(PY) bench/bench_mix.py $(BENCH_MIX_ARGS)

test-mix: setup
	$(PY) -m pytest -q tests/test_mix.py tests/test_mixplan.py
