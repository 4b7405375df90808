# The two commands: `make run` and `make test`. Each creates .venv and installs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[train,dev,ray]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/dashtune serve

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	DASHTUNE_TEST_BACKENDS=sqlite $(BIN)/python -m pytest -q -x tests/unit tests/integration

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) dashtune-data
