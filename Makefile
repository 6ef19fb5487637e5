# The two commands a new user needs are `make run` and `make test`; everything else is for developers.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared
STAMP  := $(VENV)/.installed

# Embedded defaults for `make run`: SQLite store and folder delivery under ./var.
export PEM111_DATA_DIR ?= ./var
export PEM111_FORWARD_TARGET ?= dir:./var/outbox
# The published IUC/Pathways schema pack enables CDA schema validation (rules D4-D6) when it is present.
ifneq ($(wildcard $(SHARED)/schemas/iuc),)
export PEM111_SCHEMA_DIR ?= $(SHARED)/schemas
endif

.PHONY: install run test lint typecheck check bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

run: install
	$(BIN)/nhs111 serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check adaptor mappings tests benchmarks
	$(BIN)/mypy adaptor mappings

check: lint test

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
