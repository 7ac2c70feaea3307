# The two commands of the README: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install sync-check

$(VENV)/.installed: pyproject.toml tools/setup.sh
	bash tools/setup.sh

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/segcook demo

# tier 1: the lesson cells of every notebook; tier 2: pytest (integration, CLI, recipes, references)
test: $(VENV)/.installed
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest -n 2 -q

# fails when nbdev-export or nbdev-clean would change a tracked file
sync-check: $(VENV)/.installed
	bash tools/sync_check.sh
