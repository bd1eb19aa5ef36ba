# The README's two commands are `make demo` and `make test`; both install what they need first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit lint proto bench audit

setup:
	./scripts/bootstrap.sh

# The demo listens on loopback only, so its page's debug panel is switched on.
demo: setup
	SYNCTALK_DEBUG__ENDPOINTS=$${SYNCTALK_DEBUG__ENDPOINTS:-true} $(PY) -m synctalk serve

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m synctalk.rpc.codegen --check
	$(PY) -m pytest -q -ra

# The fast in-process tests only (tests/integration starts real servers and processes).
test-unit: setup
	$(PY) -m pytest -q -ra tests/unit

lint: setup
	$(VENV)/bin/ruff check .

proto: setup
	$(PY) -m synctalk.rpc.codegen

bench: setup
	$(PY) -m bench

# Known vulnerabilities in the installed (pinned) dependencies. pip-audit lives in its own
# venv so it never changes the project's; it needs the advisory service (PyPI or OSV).
audit: setup
	test -x .venv-audit/bin/pip-audit || (python3 -m venv .venv-audit && \
		.venv-audit/bin/pip install -q pip-audit==2.10.1)
	.venv-audit/bin/pip-audit --progress-spinner off \
		--path $(VENV)/lib/python3.11/site-packages
