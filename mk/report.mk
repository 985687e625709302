# The run report (curate/report.py): one self-contained HTML page of charts read from a run.
# `make demo` writes runs/demo/report.html at its end; `make report RUN=runs/other [OUT=file.html]`.
.PHONY: report browser test-report

report: setup
	$(CURATE) report $(RUN) $(if $(OUT),--out $(OUT))

# Debian's Chromium + chromedriver for tests/test_report.py (idempotent; `make test` runs it).
browser:
	bash scripts/install_browser.sh

test-report: setup lmplz browser
	$(PY) -m pytest -q tests/test_report.py
