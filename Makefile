# The README's two commands are `make demo` and `make test`; both install what they need first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint proto bench

setup:
	./scripts/bootstrap.sh

# The demo listens on loopback only, so its page's debug panel is switched on.
demo: setup
	SYNCTALK_DEBUG__ENDPOINTS=$${SYNCTALK_DEBUG__ENDPOINTS:-true} $(PY) -m synctalk serve

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m synctalk.rpc.codegen --check
	$(PY) -m pytest -q -ra

lint: setup
	$(VENV)/bin/ruff check .

proto: setup
	$(PY) -m synctalk.rpc.codegen

bench: setup
	$(PY) -m bench
