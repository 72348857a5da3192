# Fresh machine: `make bank SOURCE=<folder or generated.photos export>` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FACEBANK := $(VENV)/bin/facebank
CONFIG ?= default
BANK ?= data/bank.h5
SOURCE ?=

.PHONY: install bank test bench clean constraints

install: $(VENV)/.installed

# setup.py and the C source too: the editable install compiles facebank/index/_screen.c in place.
$(VENV)/.installed: pyproject.toml constraints.txt setup.py facebank/index/_screen.c
	test -d $(VENV) || python3 -m venv $(VENV)
	# The CPU wheel of torch that lies on this machine; a bare `torch` pulls CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	# constraints.txt: the exact versions CI tests (refresh: `make constraints`).
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev,ray]'
	touch $@

# Build the bank from the config's sources (or SOURCE), its index, and sample picks.
bank: install
	$(FACEBANK) build --config $(CONFIG) --bank $(BANK) $(if $(SOURCE),--source $(SOURCE),)

# The import contracts first (pyproject.toml [tool.importlinter]): a cycle or an upward import fails.
# The real assets are required (a missing ../shared/assets fails, never skips silently) unless
# FACEBANK_REQUIRE_ASSETS=0 is given.
test: install
	$(VENV)/bin/lint-imports
	FACEBANK_REQUIRE_ASSETS=$${FACEBANK_REQUIRE_ASSETS:-1} $(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) tools/bench_bank.py
	$(PY) tools/bench_pick.py
	$(PY) tools/bench_api.py
	$(PY) tools/bench_generate.py
	$(PY) tools/bench_build.py

# Re-pin constraints.txt from the working venv (torch stays installed first, from torch==2.13.0).
constraints: install
	$(PY) tools/freeze_constraints.py > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
