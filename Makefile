# The two README commands: `make demo` and `make test`. Both create .venv themselves and are
# safe to re-run. PYTHON must be 3.11 for the on-disk CPU torch wheel (torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Where the report-writing targets build, archive and report; tests point them at temporary folders.
BUILD ?= build
MODEL_STORE ?= model_store
REPORTS ?= reports

# KServe's API types for the offline manifest check: its SDK unpacked without dependencies (they pin
# psutil<6 and protobuf<7, which clash with ours); tests read the generated models, never import them.
KSERVE_SDK := kserve==0.21.0

.PHONY: setup tools demo test check nightly docs-check test-slow zoo zoo-report deploy-check variants composition bench bench-text bench-images litserve-venv tune sweep reliability soak images text-model gpu-report gpu-served archive clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "==> setting up $(VENV) (torch 2.13.0 CPU, torchserve 0.12.0, onnxruntime)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# --no-compile: byte-compiling all of torch & co. cost more CPU than the rest of the install; Python
	# compiles the modules it really imports, once, on first use.
	$(PY) -m pip install --quiet --no-compile -e '.[cpu,test]'
	$(PY) -m pip install --quiet --no-compile --no-deps --upgrade --target $(VENV)/kserve-sdk '$(KSERVE_SDK)'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/servekit demo

# wrk (Debian's package) drives the benchmarks; installed when missing and we may use apt.
tools:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || echo "note: wrk not installed; bench tests will skip (and fail under CI=true)"; }

# The suite on TEST_WORKERS pytest-xdist workers, a test file per worker at a time (module fixtures and
# the live TorchServe's registrations stay in one process); expensive builds are shared between workers
# (tests/support/shared.py). Long runs are marked `slow` and left to `make nightly`.
TEST_WORKERS ?= 2
# Files are handed out in the order tests/conftest.py sets (no reordering by size).
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup tools
	$(PY) -m pytest $(PYTEST_PARALLEL)

# The inner loop, under a minute: lint, then the unit tests that build no model.
check: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit -m "not heavy and not slow"

# Everything, slow tests included: the benchmarks' smoke runs, the long commands of the docs, every documented
# long command (make images, servekit text-model, multi-input variants with PT2E INT8) end to end into temporary
# folders (nothing tracked is rewritten), the zoo. An hour or more on 2 cores.
nightly: setup tools litserve-venv
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "slow or not slow"

# Every command and code block of README.md and docs/, the long ones (make demo, make images, ...) included.
docs-check: setup tools
	$(PY) -m pytest tests/unit/test_docs_links.py tests/integration/test_docs_run.py -m "slow or not slow"

# The long tests (docs/ commands that run benchmarks and the tuner): minutes each.
test-slow: setup tools litserve-venv
	$(PY) -m pytest -m slow

# deploy/: Dockerfile lint, container config, Kubernetes + KServe manifests against their schemas,
# and the image's start command run here (no Docker engine or cluster needed)
deploy-check: setup
	$(PY) -m pytest tests/unit/test_deploy_files.py tests/unit/test_deploy_manifests.py tests/integration/test_container_start.py

# INT8 / pruned / FP16 variants: gated, archived into model_store/, measured -> reports/variants.*
variants: setup
	$(VENV)/bin/servekit variants --build-dir $(BUILD) --model-store $(MODEL_STORE) --reports-dir $(REPORTS)

# Pipeline + ensemble, in-process .mar vs workflow .war: same answers, accuracy, wrk side by side.
# Prints its tables; COMPOSITION_ARGS="--reports-dir reports" rewrites reports/composition.{md,json}.
composition: setup tools
	$(VENV)/bin/servekit composition --bench 6 $(COMPOSITION_ARGS)

# Served throughput/latency: ours vs plain vs no-op vs in-process -> reports/bench.{md,json,png}
bench: setup tools
	$(VENV)/bin/servekit bench

# What users would pick instead, in a venv of its own (never our dependency): LitServe serving the same ONNX.
LITSERVE_VENV := .venv-litserve
LITSERVE_STAMP := $(LITSERVE_VENV)/.installed
litserve-venv: $(LITSERVE_STAMP)
$(LITSERVE_STAMP):
	$(PYTHON) -m venv $(LITSERVE_VENV)
	$(LITSERVE_VENV)/bin/python -m pip install --quiet 'litserve==0.2.19' onnxruntime pillow numpy tokenizers
	@touch $(LITSERVE_STAMP)

# A trained 4-layer BERT with realistic sentence lengths, served side by side: ours FP32 and INT8, the
# docs-style handler at 1 and 2 threads, no-op, LitServe, in-process -> reports/bench_text.{md,json}
bench-text: setup tools litserve-venv
	$(VENV)/bin/servekit bench --text --max-batch-delay 10 --duration 30

# ResNet-18 with 640x427 JPEG bodies, the same rows -> reports/bench_images.{md,json,png}
bench-images: setup tools litserve-venv
	$(VENV)/bin/servekit bench --images --concurrency 16 --max-batch-delay 10 --duration 45

# batch_size x max_batch_delay x workers x threads on the CNN -> reports/bench_sweep.{md,json}
sweep: setup tools
	$(VENV)/bin/servekit bench --sweep --duration 4

# Bad-input matrix (every hostile body of docs/reliability.md), worker kill, scaling, snapshot restart,
# access checks -> reports/reliability.md; then the body fuzz (random bytes and mutations of every format)
reliability: setup
	$(VENV)/bin/servekit reliability --build-dir $(BUILD) --reports-dir $(REPORTS)
	$(PY) -m pytest -q tests/unit/test_fuzz_bodies.py tests/unit/test_hostile_bodies.py

# An image classifier: ResNet-18 trained on digit images, exported with declared preprocessing, variants
# gated and archived into model_store/, decode measured -> reports/images.{md,json} (a few minutes)
images: setup
	$(VENV)/bin/servekit images --build-dir $(BUILD) --model-store $(MODEL_STORE) --reports-dir $(REPORTS)

# The BERT-style text model: INT8 against FP32, served batching -> reports/text_model.{md,json} (minutes)
text-model: setup
	$(VENV)/bin/servekit text-model --build-dir $(BUILD)/text_model --reports-dir $(REPORTS)

# Five minutes of sustained load: worker RSS, errors, latency -> reports/soak.md (not part of `make test`)
soak: setup tools
	$(VENV)/bin/servekit soak --minutes 5

archive: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ./archive.sh

clean:
	rm -rf build model_store/*.mar logs key_file.json

# The architecture zoo (tests/unit/test_zoo.py, slow): every tiny save_pretrained checkpoint exported with
# --transformers in every format and validated (the default run exports a few of them)
zoo: setup
	$(PY) -m pytest -m slow tests/unit/test_zoo.py

# Every zoo architecture x format x dynamic INT8, pass or the reason -> reports/zoo.{md,json} (about half an hour)
zoo-report: setup
	$(VENV)/bin/servekit zoo-report

# Every variant in-process on the GPU vs this machine's CPU -> reports/gpu.{md,json,png} (needs CUDA and
# onnxruntime-gpu for the GPU rows; `pip install -e '.[gpu,test]'` on a CUDA machine). No Java needed.
gpu-report: setup
	$(VENV)/bin/servekit gpu-report

# TorchServe + our handler on CUDA beside the same archives on the CPU, every answer checked ->
# reports/gpu_served.{md,json}. `servekit gpu-served --prepare-only` builds the archives on a CPU machine.
gpu-served: setup
	$(VENV)/bin/servekit gpu-served
