# The two commands of the README: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow install sync-check docs docs-check docs-preview

$(VENV)/.installed: pyproject.toml tools/setup.sh
	bash tools/setup.sh

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/segcook demo

# tier 1: the lesson cells of every notebook; tier 2: pytest (integration, CLI, recipes, references)
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 -q -m "not slow" --durations=10

# the long tests (more than a minute each on 2 cores): training quality, overfitting, end-to-end, torchrun
test-slow: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 -q -m slow

# fails when nbdev-export or nbdev-clean would change a tracked file
sync-check: $(VENV)/.installed
	bash tools/sync_check.sh

# re-execute every chapter in place (skipping what nbdev-test skips), keep the outputs, nbdev-clean: commit the result
docs: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python tools/exec_nbs.py

# nbdev-proc-nbs exits 0 with no warning, and the committed outputs are not stale (on a copy of the tree)
docs-check: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python tools/docs_check.py

# the site without Quarto: nbdev-proc-nbs, then nbconvert to static HTML in _docs_preview/ (open _docs_preview/index.html)
docs-preview: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python tools/docs_preview.py
