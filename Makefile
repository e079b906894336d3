# Every target sets up what it needs: a fresh clone runs `make test` or `make bench` directly.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: test lint bench bench-quick clean

# The interpreter that made the venv, recorded in it: a venv made by another
# one (`make test PYTHON=python3.12` after a python3 venv) is made again.  It
# is named by its installation (sys.base_prefix) and version, which are the
# same from inside the venv itself, and for python3 and python3.11 alike.  A
# PYTHON given (on the command line or in the environment) that does not run
# stops every target but clean (it left an existing venv alone, and `make
# test PYTHON=python3.99` tested the old venv and passed); the default
# python3 not running leaves an existing venv alone.
VENV_MADE := $(VENV)/.made-by
PYTHON_ID := $(shell $(PYTHON) -c 'import sys; print(sys.base_prefix, *sys.version_info[:3])' 2>/dev/null)
ifeq ($(PYTHON_ID),)
ifneq ($(origin PYTHON),file)
ifneq ($(MAKECMDGOALS),clean)
$(error PYTHON=$(PYTHON) does not run here: name an interpreter on PATH, or give its path)
endif
endif
endif
ifneq ($(PYTHON_ID),)
ifneq ($(shell cat $(VENV_MADE) 2>/dev/null),$(PYTHON_ID))
.PHONY: $(VENV_MADE)
endif
endif

# A venv whose creation or first pip upgrade failed (no ensurepip, no network)
# is removed, so that the next run starts it again instead of using it.
$(VENV_MADE):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip || { rm -rf $(VENV); exit 1; }
	echo '$(PYTHON_ID)' > $@

$(STAMP_TEST): pyproject.toml $(VENV_MADE)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(STAMP_BENCH): pyproject.toml $(VENV_MADE)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

# Numba's disk cache of a compiled kernel is invalidated only when the file
# that defines the kernel changes, not the files whose functions it calls or
# inlines (numba/numba#1833): after an edit of _math.py the kernels of
# _kernels.py would load stale, and so would the cached @njit functions of
# examples/ that call numba_lstm.jit.  So any edit in numba_lstm/ drops both.
CACHE_STAMP := numba_lstm/__pycache__/sources.stamp

$(CACHE_STAMP): $(wildcard numba_lstm/*.py)
	rm -f numba_lstm/__pycache__/*.nbi numba_lstm/__pycache__/*.nbc
	rm -f examples/__pycache__/*.nbi examples/__pycache__/*.nbc
	mkdir -p $(@D)
	touch $@

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint $(CACHE_STAMP)
	$(PY) -m pytest

# Shapes are BxTxIxH (batch, steps, inputs, hidden units); bench/run.py --help lists the options.
bench: $(STAMP_BENCH) $(CACHE_STAMP)
	$(PY) bench/run.py \
		--shapes 1x1000x128x128,16x100x128x256,64x100x256x256,64x50x512x512,128x50x1024x1024 \
		--shapes64 1x1000x128x128,16x100x128x256,64x100x256x256 \
		--stream-hidden 32,128,512 --lengths 64x100x256x256

bench-quick: $(STAMP_BENCH) $(CACHE_STAMP)
	$(PY) bench/run.py --shapes 16x100x128x256,64x100x256x256 --shapes64 none \
		--stream-hidden 32,128 --lengths 64x100x256x256

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis .benchmarks
	rm -rf numba_lstm/__pycache__ examples/__pycache__ tests/__pycache__ bench/__pycache__
