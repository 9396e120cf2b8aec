# The two commands of the quick start, plus the benchmark.
PYTHON ?= python3

.PHONY: demo test lint bench

demo:
	$(PYTHON) -m pip install -q -e '.[demo]'
	$(PYTHON) conf/demo.py

test:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(MAKE) lint
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check edgeproxy tests benchmarks conf
	$(PYTHON) -m ruff format --check edgeproxy tests benchmarks conf
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) benchmarks/run.py
