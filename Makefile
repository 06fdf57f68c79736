# ilma: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Servers the integration tests start themselves, each its own Debian package of the same name.
SERVERS := mosquitto socat victoria-metrics
# mosquitto is in /usr/sbin, which is not on an ordinary user's PATH.
SERVER_PATH := $$PATH:/usr/local/sbin:/usr/sbin:/sbin

.PHONY: demo test lint typecheck pytest servers schema bench clean

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

pytest: $(STAMP) servers
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Install the missing servers with apt (as root, or through sudo). The tests run their own
# instances on free ports; the system services the packages set up are stopped and disabled
# so that nothing is left listening on 1883 or 8428. Without root or sudo the tests skip
# locally; under CI=true they fail.
servers:
	@set -e; \
	missing=$$(for s in $(SERVERS); do PATH="$(SERVER_PATH)" command -v $$s >/dev/null || echo $$s; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null; then sudo=sudo; \
	elif [ "$$CI" = true ]; then echo "servers missing, no root or sudo to install:" $$missing >&2; exit 1; \
	else echo "warning: servers missing, their tests will skip:" $$missing >&2; exit 0; fi; \
	echo "installing:" $$missing; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	for s in $$missing; do \
		if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now --quiet $$s.service 2>/dev/null || true; \
		elif [ -x /etc/init.d/$$s ]; then $$sudo /etc/init.d/$$s stop >/dev/null 2>&1 || true; fi; \
	done

# Regenerate config/schema/*.json after changing the config models.
schema: $(STAMP)
	$(BIN)/python -m controller.schema config/schema

bench: $(STAMP)
	$(BIN)/python bench/sim_speed.py

clean:
	rm -rf $(VENV) out .mypy_cache .pytest_cache .ruff_cache build *.egg-info
