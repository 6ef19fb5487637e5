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

.PHONY: install run test browser lint typecheck check bench bench-quick soak clean image image-test image-tools

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

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Run as root, or with passwordless sudo, or print one line: apt-get install PACKAGES, for the tests named.
define apt_install
	@missing=""; for tool in $(1); do command -v "$$tool" >/dev/null || missing="$$missing $$tool"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make: not installing $(2) (missing:$$missing; needs root or passwordless sudo): $(3) cannot run"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "make: $(2) missing ($$missing) and no apt-get: $(3) cannot run"; exit 0; fi; \
	echo "make: installing $(2) (for $(3))"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null \
	|| echo "make: installing $(2) failed: $(3) cannot run"
endef

# The console's browser tests drive Debian's Chromium through its chromedriver. Without them those tests skip on a
# developer machine and fail under CI (CI=true), so they are installed here when missing and possible.
browser:
	$(call apt_install,/usr/bin/chromium /usr/bin/chromedriver,chromium chromium-driver,the console browser tests (tests/test_console_browser.py))

# -- the Docker image (README, Docker) ------------------------------------------------------------------------------
# `make image` builds it, starting a private Docker engine when none runs (image/engine.py). IMAGE_BASE=local builds
# on a Debian bookworm base made here with debootstrap (image/base.sh), for machines that reach no image registry.
# The schema pack is downloaded and checked during the build, or taken from SCHEMA_PACK_DIR (by default ../shared's
# copy when it is there), which goes into the build context and never into the checkout.
IMAGE_BASE      ?= python:3.11-slim
IMAGE_TAG       ?= nhs111-adaptor:local
SCHEMA_PACK_DIR ?= $(if $(wildcard $(SHARED)/schemas/iuc),$(SHARED)/schemas)
SYSTEM_PYTHON   ?= python3

image:
	$(SYSTEM_PYTHON) image/engine.py build --base $(IMAGE_BASE) --tag $(IMAGE_TAG) $(if $(SCHEMA_PACK_DIR),--schema-pack $(SCHEMA_PACK_DIR))

# Debian's Docker engine and debootstrap (for the local base), installed when missing and possible.
image-tools:
	$(call apt_install,dockerd debootstrap,docker.io debootstrap,the image tests (tests/test_image.py))

# Builds the image on the local base and runs it (tests/test_image.py, marked `image`: `make test` leaves it out).
# Images, the base's root filesystem and the build caches are kept in ~/.cache/nhs111-image for the next run.
image-test: install image-tools
	$(BIN)/python -m pytest -m image tests/test_image.py $(PYTEST_ARGS)
	@cat tests/artifacts/image.txt

lint: install
	$(BIN)/ruff check adaptor mappings tests benchmarks image
	$(BIN)/mypy adaptor mappings benchmarks image
	$(BIN)/lint-imports

check: lint test

# Conversion, end-to-end load, accept CPU against its floor, sustained delivery and search on 1,000,000 stored
# messages (about 40 min; SQLite, then PostgreSQL on 127.0.0.1:5432 when it is reachable): writes the benchmark
# section of docs/benchmarks.md. `make bench-quick`: a smoke run of the same. BENCH_ARGS="--only accept search":
# just those parts (--search-messages N for another count of stored messages).
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

# The long forms of the robustness suites (about 20 min: 5,000 hostile-input cases, SIGKILLs and target outages
# under load, the broker stopped under load with three replicas, the front door's attacks): writes the robustness
# section of docs/benchmarks.md. The short forms run in `make test`; SOAK_ARGS="--only frontdoor" (or
# "--only brokerstop") runs just that one.
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
