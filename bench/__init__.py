"""sgtriton benchmarks: pytest-benchmark suites (``pytest bench/ --benchmark-only``) and the
side-by-side comparison runner (``python -m bench``). See ``bench/README.md``."""
