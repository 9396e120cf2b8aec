# The two commands of the quick start, plus the benchmark and the compiled wheel.
#
# Every target runs in the project's own virtualenv, $(VENV), made on first use with
# $(PYTHON) -m venv: nothing is installed into the system's Python (which Debian 12 and
# Ubuntu 23.04+ refuse anyway, PEP 668). Debian/Ubuntu need `python3-venv` for that.
# The venv is reinstalled when pyproject.toml changes; `rm -rf .venv` starts afresh.
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(abspath $(VENV))/bin/python

COMPILED_DIR ?= build/compiled

.PHONY: demo test test-pure test-compiled test-install compile wheel lint bench fuzz

# ensurepip is what Debian's python3-venv adds: without it `venv` leaves a venv with no pip,
# which is removed so that the next run tries again instead of using it.
$(VENV)/bin/pip:
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "make: cannot create the virtualenv $(VENV) with $(PYTHON)" \
		"(Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
	@echo "make: virtualenv $(VENV) created with $$($(VENV_PYTHON) --version)"

# Editable installs (the work tree is what runs). setuptools for the targets that run
# setup.py themselves (compile, wheel): pyproject.toml's build requirement.
$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/pip
	$(VENV_PYTHON) -m pip install -q -e '.[demo]'
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/pip
	$(VENV_PYTHON) -m pip install -q -e '.[test]' 'setuptools>=68'
	@touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(VENV_PYTHON) conf/demo.py

# Lint and type-check, then the whole suite twice: on the pure-Python package, and on a
# copy whose request path is compiled with mypyc (setup.py), as production installs it;
# then the install itself and the deployment guide's steps, each in fresh virtualenvs.
test: $(VENV)/.test-installed
	$(MAKE) lint
	$(MAKE) test-pure
	$(MAKE) test-compiled
	$(MAKE) test-install

test-pure: $(VENV)/.test-installed
	$(VENV_PYTHON) -m pytest -q

# The compiled copy lives in $(COMPILED_DIR) (the work tree never holds built modules,
# so an edited .py is always what runs in it); tests and CLI subprocesses run from there.
test-compiled: compile
	cd $(COMPILED_DIR) && EDGEPROXY_EXPECT_COMPILED=1 PYTHONPATH=. $(VENV_PYTHON) -m pytest -q

compile: $(VENV)/.test-installed
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	cp -r edgeproxy tests conf docs setup.py pyproject.toml MANIFEST.in README.md $(COMPILED_DIR)/
	cd $(COMPILED_DIR) && EDGEPROXY_COMPILE=1 $(VENV_PYTHON) setup.py -q build_ext --inplace

# `pip install .` in a fresh virtualenv (build isolation, so the build requirements are
# tested too), which must give the compiled build; then the pure-Python installs
# (EDGEPROXY_COMPILE=0, and no C compiler); and docs/deploy.md's steps with
# conf/edgeproxy.service's command lines, on the compiled install. Slow (mypyc builds), so
# run once, not per leg.
test-install: $(VENV)/.test-installed
	EDGEPROXY_TEST_INSTALL=1 $(VENV_PYTHON) -m pytest -q tests/packaging/test_install.py tests/packaging/test_deploy.py

# The sdist, and the compiled wheel built from it (as pip builds it: isolated), in dist/.
wheel: $(VENV)/.test-installed
	rm -f dist/edgeproxy-*
	$(VENV_PYTHON) setup.py -q sdist -d dist
	EDGEPROXY_COMPILE=1 $(VENV_PYTHON) -m pip wheel -q --no-deps -w dist dist/edgeproxy-*.tar.gz

lint: $(VENV)/.test-installed
	$(VENV_PYTHON) -m ruff check edgeproxy tests benchmarks conf setup.py
	$(VENV_PYTHON) -m ruff format --check edgeproxy tests benchmarks conf setup.py
	$(VENV_PYTHON) -m mypy

bench: $(VENV)/.test-installed
	$(VENV_PYTHON) benchmarks/run.py

# A long differential run of the two codecs before a release (about 100 examples a second).
# A disagreement is saved to tests/corpus/differential/, which every test run replays:
# commit it with its fix.
FUZZ_EXAMPLES ?= 100000

fuzz: $(VENV)/.test-installed
	EDGEPROXY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV_PYTHON) -m pytest -q tests/unit/test_codec_differential.py --hypothesis-show-statistics
