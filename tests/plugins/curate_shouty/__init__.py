"""A quality-rule plugin that lives outside curate's source tree (tests put it on PYTHONPATH)."""
