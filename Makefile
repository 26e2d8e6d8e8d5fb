# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates the virtual environment with pip when it is missing.
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= small
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: run test ui mlflow-ui clean

$(BIN)/galpipe: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/galpipe
	$(BIN)/galpipe run --profile $(PROFILE)

test: $(BIN)/galpipe
	$(BIN)/python -m pytest -q galpipe_tests

ui: $(BIN)/galpipe
	mkdir -p $(DAGSTER_HOME)
	GALPIPE_PROFILE=$(PROFILE) $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

mlflow-ui: $(BIN)/galpipe
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data/$(PROFILE)
