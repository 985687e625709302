# Longer fuzz run of the input readers (tests/test_fuzz.py: WARC plain/gz, HTML folders, JSONL,
# Parquet). `make test` runs the same tests with 20 fixed examples each; this draws
# FUZZ_EXAMPLES random ones per test and prints hypothesis' statistics (examples tried, failing).
.PHONY: fuzz
FUZZ_EXAMPLES ?= 2000

fuzz: setup
	CURATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CURATE_NO_PROGRESS=1 $(PY) -m pytest -q -p no:logging -p no:cacheprovider \
		--hypothesis-show-statistics tests/test_fuzz.py
