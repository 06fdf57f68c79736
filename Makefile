# ilma: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest schema bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ilma needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: a simulated Helsinki office for a January week, ilma against the baselines.
demo: $(STAMP)
	$(BIN)/ilma-sim run config/sites/helsinki-office.toml --start 2027-01-11 --days 7 \
		--controllers ilma,schedule,co2,oracle --seed 1 --out out/demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy controller sensors sim bacnet_modbus edge_agent tests bench

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Regenerate config/schema/*.json after changing the config models.
schema: $(STAMP)
	$(BIN)/python -m controller.schema config/schema

bench: $(STAMP)
	$(BIN)/python bench/sim_speed.py

clean:
	rm -rf $(VENV) out .mypy_cache .pytest_cache .ruff_cache build *.egg-info
