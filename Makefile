# dawms: the two commands a new user needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check

.PHONY: venv services demo test lint bench docs clean

# The venv with every extra; deps are reinstalled only when pyproject.toml changes,
# the strict editable link tree (new modules) is refreshed every time (a second).
venv: $(VENV)/.deps
	@$(PIP) install --no-deps -e . --config-settings editable_mode=strict \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }

$(VENV)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -e '.[all]' --config-settings editable_mode=strict \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $@

# Every system service the tests need, installed and started if missing (idempotent).
services: venv
	scripts/services.sh

demo: venv
	$(BIN)/dawms demo

# ruff, the import contracts of pyproject.toml (over the installed package), and the
# architecture rules (one writer of state columns, history rows, existing references)
lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider tests/test_architecture.py

test: venv services lint
	. .services/env && DAWMS_NO_SKIP=1 $(BIN)/pytest -q -p no:cacheprovider -rfEs

# Every benchmark: `python -m bench.NAME --json`, its JSON result the last line of stdout.
BENCHES := claim_rate transfer_rate activation movers carousel
bench: venv services
	. .services/env && for b in $(BENCHES); do $(BIN)/python -m bench.$$b --json || exit 1; done

# A screenshot of the monitor's task page from a real `dawms demo --serve` run (Playwright)
DOCS_OUT ?= docs/monitor-task.png
docs: venv services
	$(BIN)/python scripts/monitor_screenshot.py --out $(DOCS_OUT)

clean:
	rm -rf $(VENV) build .services *.egg-info
