# Two commands do everything: `make run` (the assistant) and `make test` (lint, types, tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	@PY="$(PY)" VENV="$(VENV)" bash scripts/setup.sh
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/voxmesh up --port $(PORT)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/voxmesh bench latency --runs 10 --url ws://127.0.0.1:$(PORT)/v1/realtime

clean:
	rm -rf $(VENV)
