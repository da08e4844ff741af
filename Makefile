# adclick: `make run` builds everything and runs the main job on the embedded default (SQLite);
# `make test` installs what is missing and runs the whole test suite; `make lint` runs ruff and mypy as CI does.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE_DIR := out/sample
SAMPLE_EVENTS ?= 20000
DB := adclick.db
BENCH_EVENTS ?= 1000000
# Apache Kafka's jars for `adclick broker` and the tests' broker (tools/kafka/pom.xml names the version);
# runners/broker.py looks in the same place.
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
KAFKA_HOME := $(HOME)/.cache/adclick/kafka/$(KAFKA_VERSION)
MAVEN := mvn -q -B -Dstyle.color=never
# Beam's Prism runner, built from the Go module proxy at the SDK's version (constraints.txt pins it);
# runners/prism.py looks in the same place. Go may not be on PATH (CI): /usr/local/go is Go's own place.
BEAM_VERSION := $(shell sed -n 's/^apache-beam==//p' constraints.txt)
PRISM := $(HOME)/.cache/adclick/prism/$(BEAM_VERSION)/prism
GO := $(or $(shell command -v go),/usr/local/go/bin/go)
# Beam's Kafka expansion service and Java SDK harness for ReadFromKafka on Prism, as a classpath (Maven Central
# serves no shaded io-expansion-service jar; tools/beam-expansion/pom.xml says why); runners/expansion.py
# looks in the same place.
EXPANSION_VERSION := $(shell sed -n 's:.*<beam.version>\(.*\)</beam.version>.*:\1:p' tools/beam-expansion/pom.xml)
EXPANSION_HOME := $(HOME)/.cache/adclick/expansion/$(EXPANSION_VERSION)

.PHONY: install kafka prism beam-expansion system-deps lint run test fuzz bench clean

install: $(STAMP) kafka prism beam-expansion

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet -c constraints.txt -e '.[gcp,kafka,serve,dev]'
	touch $@

kafka: $(KAFKA_HOME)/.installed

# A pom's runtime jars into the stamp's directory, Java and Maven from Debian where missing. Offline
# first: once ~/.m2 holds the jars, a fresh clone copies them without the network.
define copy-jars
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  { apt-get update && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven; }
	rm -rf $(@D)/libs
	$(MAVEN) -f $< -o dependency:copy-dependencies -DoutputDirectory=$(@D)/libs >/dev/null 2>&1 || \
	  $(MAVEN) -f $< dependency:copy-dependencies -DoutputDirectory=$(@D)/libs
	touch $@
endef

$(KAFKA_HOME)/.installed: tools/kafka/pom.xml
	$(copy-jars)

prism: $(PRISM)

$(PRISM):
	@test -x $(GO) || { echo 'make prism: Go is needed to build Beam'"'"'s Prism runner: https://go.dev/doc/install' >&2; exit 1; }
	GOBIN=$(dir $@) GOFLAGS=-mod=mod $(GO) install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)

beam-expansion: $(EXPANSION_HOME)/.installed

$(EXPANSION_HOME)/.installed: tools/beam-expansion/pom.xml
	$(copy-jars)

# Debian packages the tests need: Chromium for the dashboard's browser tests, and the Bigtable and Pub/Sub
# emulators (the Pub/Sub one runs on the Java that `make kafka` installs). The emulators come from Google
# Cloud's apt repository (https://cloud.google.com/sdk/docs/install#deb); where it is not configured, this
# says so and goes on: the tests then skip on a developer's machine and fail in CI (.ci/run).
EMULATORS := google-cloud-cli-bigtable-emulator google-cloud-cli-pubsub-emulator

system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { apt-get update && apt-get install -y --no-install-recommends prometheus && \
	    { systemctl disable --now prometheus 2>/dev/null || true; }; }  # the tests start their own
	@for package in $(EMULATORS); do dpkg-query -W -f='$${Status}\n' $$package 2>/dev/null | \
	  grep -q 'ok installed' || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  { apt-get update && apt-get install -y --no-install-recommends $$missing; } || \
	  echo "make system-deps: could not install$$missing (is Google Cloud's apt repository configured?" \
	    "https://cloud.google.com/sdk/docs/install#deb)" >&2; \
	fi

# ruff (ruff.toml) over the whole tree, mypy (mypy.ini) over the pipeline's packages; .ci/run runs it first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

run: install
	$(BIN)/adclick generate --events $(SAMPLE_EVENTS) --out $(SAMPLE_DIR)
	$(BIN)/adclick replay --input '$(SAMPLE_DIR)/clicks-*' --sink sqlite:///$(DB) \
	  --dead-letter out/dead-letters.jsonl --summary out/summary.json
	$(BIN)/adclick top --sink sqlite:///$(DB)
	@echo 'dashboard and query API: $(BIN)/adclick serve --sink sqlite:///$(DB), then open http://127.0.0.1:8080/dashboard/'

test: install system-deps
	$(BIN)/python -m pytest

# The fuzz campaign (marker fuzz: the raw-log readers, the parser, the query API) 50 times longer than in `make test`
# (the profiles are in tests/conftest.py).
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m fuzz

# The replay against DuckDB on the same generated log (README, Performance); BENCH_ARGS for more.
bench: install
	$(BIN)/adclick bench --events $(BENCH_EVENTS) $(BENCH_ARGS)

clean:
	rm -rf out $(DB) $(DB)-wal $(DB)-shm
