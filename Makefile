# Two commands from a fresh clone: `make run` and `make test`.
# Needs Python >= 3.11 (with its venv module) and make; the rest is installed into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/early.toml
CONFIG_DIR ?= config
PORT ?= 4200

.PHONY: run test test-slow lint serve server bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python >= 3.11 is needed; got " + sys.version.split()[0] + " (make PYTHON=/path/to/python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@echo "installing the project into $(VENV) (log: $(VENV)/install.log)"
	@# pip and setuptools talk a lot on success (e.g. setuptools' editable-install
	@# warning): keep it in the log, and show the whole log when the install fails
	@{ $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip \
	  && $(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log >&2; echo "error: installing into $(VENV) failed (log above and in $(VENV)/install.log)" >&2; exit 1; }
	@touch $(STAMP)

# run the study flow on the bundled example; prints the report's path
run: $(STAMP)
	$(BIN)/growth run $(CONFIG)

# ruff, then the whole test suite (including the Prefect server round trip)
# ruff, then every test except the long statistical simulations (about 10 minutes)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

# the long simulations (type-I error, coverage, bias; about 15 minutes)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# a local Prefect server with its UI on http://127.0.0.1:$(PORT)
server: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PORT)

# serve every scheduled study of $(CONFIG_DIR) (uses PREFECT_API_URL when set)
serve: $(STAMP)
	$(BIN)/growth serve $(CONFIG_DIR)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info
