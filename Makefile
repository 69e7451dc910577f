# Everything a new machine needs: Python 3.11+. `make` creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: drill run test lint bench soak clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

drill: $(STAMP)
	$(BIN)/incident-bot drill

run: $(STAMP)
	$(BIN)/incident-bot run

lint: $(STAMP)
	$(BIN)/ruff check .

# Twice as many test workers as cores: most tests wait (the fake Slack's latency, bot
# processes, moto_server), and with one worker per core the cores sat idle a third of the run.
TEST_WORKERS ?= $(shell $(PY) -c 'import os; print(2 * (os.cpu_count() or 1))')

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The bot under a steady mix for SOAK_MINUTES (default 10): fails on RSS or thread growth.
soak: $(STAMP)
	SOAK_MINUTES=$${SOAK_MINUTES:-10} $(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
