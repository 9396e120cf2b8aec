# The two commands of the quick start, plus the benchmark.
PYTHON ?= python3

COMPILED_DIR ?= build/compiled

.PHONY: demo test test-pure test-compiled compile lint bench

demo:
	$(PYTHON) -m pip install -q -e '.[demo]'
	$(PYTHON) conf/demo.py

# Lint and type-check, then the whole suite twice: on the pure-Python package, and on a
# copy whose request path is compiled with mypyc (setup.py), as production installs it.
test:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(MAKE) lint
	$(MAKE) test-pure
	$(MAKE) test-compiled

test-pure:
	$(PYTHON) -m pytest -q

# The compiled copy lives in $(COMPILED_DIR) (the work tree never holds built modules,
# so an edited .py is always what runs in it); tests and CLI subprocesses run from there.
test-compiled: compile
	cd $(COMPILED_DIR) && EDGEPROXY_EXPECT_COMPILED=1 PYTHONPATH=. $(PYTHON) -m pytest -q

compile:
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	cp -r edgeproxy tests conf setup.py pyproject.toml README.md $(COMPILED_DIR)/
	cd $(COMPILED_DIR) && EDGEPROXY_COMPILE=1 $(PYTHON) setup.py -q build_ext --inplace

lint:
	$(PYTHON) -m ruff check edgeproxy tests benchmarks conf setup.py
	$(PYTHON) -m ruff format --check edgeproxy tests benchmarks conf setup.py
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) benchmarks/run.py
