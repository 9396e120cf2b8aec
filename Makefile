# The two commands of the quick start, plus the benchmark and the compiled wheel.
PYTHON ?= python3

COMPILED_DIR ?= build/compiled

.PHONY: demo test test-pure test-compiled test-install compile wheel lint bench fuzz

demo:
	$(PYTHON) -m pip install -q -e '.[demo]'
	$(PYTHON) conf/demo.py

# Lint and type-check, then the whole suite twice: on the pure-Python package, and on a
# copy whose request path is compiled with mypyc (setup.py), as production installs it;
# then once the install itself, as the README gives it.
test:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(MAKE) lint
	$(MAKE) test-pure
	$(MAKE) test-compiled
	$(MAKE) test-install

test-pure:
	$(PYTHON) -m pytest -q

# The compiled copy lives in $(COMPILED_DIR) (the work tree never holds built modules,
# so an edited .py is always what runs in it); tests and CLI subprocesses run from there.
test-compiled: compile
	cd $(COMPILED_DIR) && EDGEPROXY_EXPECT_COMPILED=1 PYTHONPATH=. $(PYTHON) -m pytest -q

compile:
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	cp -r edgeproxy tests conf setup.py pyproject.toml MANIFEST.in README.md $(COMPILED_DIR)/
	cd $(COMPILED_DIR) && EDGEPROXY_COMPILE=1 $(PYTHON) setup.py -q build_ext --inplace

# `pip install .` in a fresh virtualenv (build isolation, so the build requirements are
# tested too), which must give the compiled build; then the pure-Python installs
# (EDGEPROXY_COMPILE=0, and no C compiler). Slow (one mypyc build), so run once, not per leg.
test-install:
	EDGEPROXY_TEST_INSTALL=1 $(PYTHON) -m pytest -q tests/packaging/test_install.py

# The sdist, and the compiled wheel built from it (as pip builds it: isolated), in dist/.
wheel:
	rm -f dist/edgeproxy-*
	$(PYTHON) setup.py -q sdist -d dist
	EDGEPROXY_COMPILE=1 $(PYTHON) -m pip wheel -q --no-deps -w dist dist/edgeproxy-*.tar.gz

lint:
	$(PYTHON) -m ruff check edgeproxy tests benchmarks conf setup.py
	$(PYTHON) -m ruff format --check edgeproxy tests benchmarks conf setup.py
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) benchmarks/run.py

# A long differential run of the two codecs before a release (about 100 examples a second).
# A disagreement is saved to tests/corpus/differential/, which every test run replays:
# commit it with its fix.
FUZZ_EXAMPLES ?= 100000

fuzz:
	EDGEPROXY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest -q tests/unit/test_codec_differential.py --hypothesis-show-statistics
