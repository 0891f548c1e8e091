# delaywatch — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 90
OLIST_CSV ?= ../shared/data/olist_classified/olist_classified_public_dataset.csv
BENCH_EVENTS ?= 200000
BENCH_OUT ?= .bench/results.json
PROFILE ?= stress

.DEFAULT_GOAL := help
.PHONY: help install demo test test-faults test-unit test-broker lint schemas replay-20k olist-compare bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install delaywatch with its dev tools

demo: $(STAMP) ## broker (Kafka if Java, else Tansu) + worker + a simulated day; summary after DURATION s
	$(BIN)/delaywatch demo --duration $(DURATION)

test: $(STAMP) ## unit, contract, replay quality, integration on a real broker (not the fault tests)
	$(BIN)/python -m pytest -m "not faults"

test-faults: $(STAMP) ## fault tests on Apache Kafka: kill -9, broker stall/restart, failing sink, fuzz
	$(BIN)/python -m pytest -m faults -s

test-unit: $(STAMP) ## tests that need no broker
	$(BIN)/python -m pytest -m "not broker"

test-broker: $(STAMP) ## integration tests on a real broker only
	$(BIN)/python -m pytest -m broker

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy delaywatch streams models schemas config

schemas: $(STAMP) ## export the JSON Schemas of every topic to schemas/json
	$(BIN)/delaywatch schemas --out schemas/json

replay-20k: $(STAMP) ## simulate 20,000 orders (seed 7, PROFILE=stress or field) and replay them with truth into out/
	$(BIN)/delaywatch simulate --orders 20000 --seed 7 --profile $(PROFILE) --out out/events.jsonl --truth out/truth.jsonl
	$(BIN)/delaywatch replay --input out/events.jsonl --truth out/truth.jsonl --out out/replay

olist-compare: $(STAMP) ## Olist: online model vs batch baseline at placement (OLIST_CSV) into out/
	$(BIN)/delaywatch eval olist $(OLIST_CSV) --out out/olist-compare.json

bench: $(STAMP) ## own Apache Kafka: worker vs baselines, replay, latency, scale-out, memory (~10 min)
	$(BIN)/delaywatch bench --events $(BENCH_EVENTS) --out $(BENCH_OUT)

clean: ## remove build and run artefacts (keeps .venv)
	rm -rf out .demo .bench build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
