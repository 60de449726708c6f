# Two commands for a newcomer: `make demo` (the main job) and `make test` (the tests).
# Each bootstraps what it needs, idempotently: .venv with the locked stack, gRPC stubs,
# MovieLens-100K, the Kafka broker jars. `make check` is the inner loop: lint, types and the
# tests that need no trained model and no real part (tests/conftest.py sorts them).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RECSYS := $(VENV)/bin/recsys
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard proto/recsys/v1/*.proto)
STUBS := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))
DATA := .cache/data/ml-100k/parquet/interactions.parquet
KAFKA_JARS := .cache/kafka/libs/.pom.sha256
MYPY := $(VENV)/bin/mypy recsys features catalog towers evaluation training index serving candidates ranking loadtest \
	benchmarks localservices commands

.PHONY: demo test check setup venv proto data kafka-jars redis broker loadtest lint clean

demo: setup
	@echo "==> recsys demo (train, index, features, Kafka + server + ingester, the loop)"
	$(RECSYS) demo

test: setup lint
	@echo "==> tests (real Kafka broker, Feast store, gRPC servers and Locust; 6-15 min)"
	$(PY) -m pytest

# The fast tier: ruff, then mypy beside the tests that need no trained model, broker, Redis,
# Feast store or server (the two share the machine's two cores).
check: venv proto data
	@echo "==> check: ruff, mypy and the fast tier of the tests (no trained model, no real part)"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@$(MYPY) > $(VENV)/mypy.out 2>&1 & mypy=$$!; \
	  $(PY) -m pytest -m "not integration" -q; tests=$$?; \
	  wait $$mypy; typed=$$?; echo "==> mypy"; cat $(VENV)/mypy.out; \
	  exit $$(( tests || typed ))

setup: venv proto data kafka-jars redis

venv: $(INSTALLED)
$(INSTALLED): pyproject.toml constraints.txt
	@echo "==> [setup 1/5] virtualenv $(VENV) with the locked stack (first time: a few minutes)"
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else f"Python 3.11 is required, found {sys.version.split()[0]} ($(PYTHON)); set PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@touch $@

proto: $(STUBS)
# proto/generate.sh is the one stub command (the Docker image runs it too).
$(STUBS) &: $(PROTOS) proto/generate.sh $(INSTALLED)
	@echo "==> [setup 2/5] gRPC stubs from proto/ into recsys/v1/"
	PYTHON=$(PY) sh proto/generate.sh

data: $(DATA)
$(DATA): | $(INSTALLED)
	@echo "==> [setup 3/5] MovieLens-100K (from the recbole==1.2.1 wheel on PyPI)"
	$(RECSYS) fetch-data

kafka-jars: $(KAFKA_JARS)
$(KAFKA_JARS): features/kafka/pom.xml | $(INSTALLED)
	@echo "==> [setup 4/5] Apache Kafka broker jars (Maven Central)"
	$(RECSYS) fetch-kafka

# Debian packages: redis-server (the Redis online-store option and its tests) and prometheus
# (promtool checks the deployment's scrape config; a test scrapes real servers with it).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
redis:
	@{ command -v redis-server && command -v prometheus && command -v promtool; } >/dev/null || { \
	  echo "==> [setup 5/5] redis-server and prometheus (Debian packages)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server prometheus; }

# The latency SLO gate: Locust at loadtest.rate for loadtest.seconds, beside a null handler.
loadtest: setup
	$(RECSYS) loadtest --baseline

broker: setup
	$(RECSYS) broker

lint: venv proto
	@echo "==> lint: ruff, mypy"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)

clean:
	rm -rf .state artifacts
