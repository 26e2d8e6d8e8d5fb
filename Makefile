# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates the virtual environment with pip when it is missing.
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= small
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: run test bench chromium postgresql ui clean

$(BIN)/galpipe: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/galpipe
	$(BIN)/galpipe run --profile $(PROFILE)

test: $(BIN)/galpipe chromium postgresql
	$(BIN)/ruff check galpipe galpipe_tests bench scripts
	$(BIN)/python -m pytest -q galpipe_tests

# After `make run` (and `make run PROFILE=paper` for its wall time): bench/results/cpu.{json,md}.
bench: $(BIN)/galpipe
	$(BIN)/python bench/run.py --profile $(PROFILE)

# The UI test drives Debian's Chromium through Playwright, which then downloads no browser of its own.
chromium:
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# The loopback cluster test (test_run_queue.py) starts Debian's PostgreSQL server on 127.0.0.1.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)

ui: $(BIN)/galpipe
	$(BIN)/galpipe ui --profile $(PROFILE)

clean:
	rm -rf data/$(PROFILE)
