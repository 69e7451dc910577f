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

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The bot under a steady mix for SOAK_MINUTES (default 10): fails on RSS or thread growth.
soak: $(STAMP)
	SOAK_MINUTES=$${SOAK_MINUTES:-10} $(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
