# bench-e2e: curate end to end against DataTrove and NeMo Curator, alternated in one job
# (bench/bench_e2e.py); writes docs/BENCHMARKS.md's end-to-end section from the run.
# The corpora and the peers' virtualenvs (about 7 GB) go under E2E_DIR; nothing is committed.
# With the defaults (7,001 pages, 3 rounds, every system also on the 4x corpus) it runs about 65
# minutes on 2 cores.
E2E_DIR    ?= build/bench-e2e
E2E_ROUNDS ?= 3
E2E_DOCS   ?= 7001
E2E_SCALE  ?= 4
E2E_ARGS   ?=
.PHONY: bench-e2e

bench-e2e: setup
	$(PY) bench/bench_e2e.py --scratch $(E2E_DIR) --rounds $(E2E_ROUNDS) --docs $(E2E_DOCS) \
	  --scale $(E2E_SCALE) $(E2E_ARGS)
