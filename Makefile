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

.PHONY: install run test lint typecheck check bench bench-quick soak clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

# No allow-list in the embedded default: `make run` accepts messages for any recipient (and says so at start-up),
# unless one of the allow-list settings is in the environment; production sets the list (see README, Settings).
ifeq ($(strip $(PEM111_ITK_ODS_CODE_LIST)$(PEM111_ITK_DOS_ID_LIST)$(PEM111_ITK_EXTERNAL_CONFIGURATION_URL)),)
run: export PEM111_ITK_ACCEPT_ANY_ADDRESS ?= true
endif
run: install
	$(BIN)/nhs111 serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check adaptor mappings tests benchmarks
	$(BIN)/mypy adaptor mappings benchmarks
	$(BIN)/lint-imports

check: lint test

# Conversion, end-to-end load and search benchmarks (about 30 min; SQLite, then PostgreSQL on 127.0.0.1:5432 when
# it is reachable): writes the benchmark section of docs/benchmarks.md. `make bench-quick`: a smoke run of the same.
# BENCH_ARGS="--only search" runs only the search on 1,000,000 stored messages (--search-messages N for another
# count) and replaces only its part.
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

# The long forms of the robustness suites (about 12 min: 5,000 hostile-input cases, SIGKILLs and target outages
# under load, the front door's attacks): writes the robustness section of docs/benchmarks.md. The short forms run
# in `make test`; SOAK_ARGS="--only frontdoor" runs just the front door's.
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
