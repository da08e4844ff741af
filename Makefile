# adclick: `make run` builds everything and runs the main job on the embedded default (SQLite);
# `make test` installs what is missing and runs the whole test suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE_DIR := out/sample
SAMPLE_EVENTS ?= 20000
DB := adclick.db
BENCH_EVENTS ?= 1000000

.PHONY: install system-deps run test bench clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet -c constraints.txt -e '.[gcp,kafka,serve,dev]'
	touch $@

# Debian packages the tests need: Chromium for the dashboard's browser tests.
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }

run: install
	$(BIN)/adclick generate --events $(SAMPLE_EVENTS) --out $(SAMPLE_DIR)
	$(BIN)/adclick replay --input '$(SAMPLE_DIR)/clicks-*' --sink sqlite:///$(DB) \
	  --dead-letter out/dead-letters.jsonl --summary out/summary.json
	$(BIN)/adclick top --sink sqlite:///$(DB)
	@echo 'dashboard and query API: $(BIN)/adclick serve --sink sqlite:///$(DB), then open http://127.0.0.1:8080/dashboard/'

test: install system-deps
	$(BIN)/python -m pytest

# The replay against DuckDB on the same generated log (README, Performance); BENCH_ARGS for more.
bench: install
	$(BIN)/adclick bench --events $(BENCH_EVENTS) $(BENCH_ARGS)

clean:
	rm -rf out $(DB) $(DB)-wal $(DB)-shm
