# dedup: exact + MinHash-LSH near-duplicate removal (stages/dedup.py, filters/minhash.py).
.PHONY: bench-dedup eval-dedup test-dedup

bench-dedup: setup
	$(PY) bench/bench_dedup.py

eval-dedup: setup
	$(PY) bench/eval_dedup.py

test-dedup: setup
	$(PY) -m pytest -q tests/test_minhash.py tests/test_dedup.py tests/test_dedup_eval.py
