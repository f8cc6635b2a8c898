# The two README commands: `make demo` and `make test`. Both create .venv themselves and are
# safe to re-run. PYTHON must be 3.11 for the on-disk CPU torch wheel (torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test variants archive clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (torch 2.13.0 CPU, torchserve 0.12.0, onnxruntime)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/servekit demo

test: setup
	$(PY) -m pytest

# INT8 / pruned / FP16 variants: gated, archived into model_store/, measured -> reports/variants.*
variants: setup
	$(VENV)/bin/servekit variants

archive: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./archive.sh

clean:
	rm -rf build model_store/*.mar logs key_file.json
