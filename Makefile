# One entry point for people and CI: `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WIDGET := mlxnb/static/widget.js
# mlx[cpu] on Linux links a slow reference BLAS; Debian's OpenBLAS, when present, makes fp32
# prompt processing 10-16x faster with identical results. Its OpenMP build first: the pthread
# build's fork handler deadlocks after MLX has run (a notebook's `!cmd` hung), the OpenMP one
# has none. Choose another with `make demo OPENBLAS=/path/to/libopenblas.so.0`.
OPENBLAS := $(firstword $(wildcard /usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so.0 \
  /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0))
RUN := env $(if $(OPENBLAS),LD_PRELOAD=$(OPENBLAS)) HF_HUB_DISABLE_TELEMETRY=1
PYTEST_ARGS ?=
# Two workers (CI has two cores), a test file per worker: its module fixtures (engines, kernels,
# servers) are built once, and tests that build on earlier ones in the file keep their order.
# One OpenBLAS thread per process: its idle threads spin, and two workers' (plus their kernels'
# and subprocesses') spinning threads on two cores made some tests six times slower. (OpenBLAS's
# OpenMP build takes its thread count from OpenMP's variable.)
PYTEST_PARALLEL ?= -n 2 --dist loadfile
PYTEST_ENV := OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

.PHONY: demo serve test lint lint-js pytest vitest widget bench clean

# JupyterLab refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

demo: $(STAMP) $(WIDGET)  ## set up, then open the quickstart in JupyterLab
	$(RUN) $(BIN)/jupyter lab $(ROOT_FLAG) notebooks/01-quickstart.ipynb

serve: $(STAMP)  ## set up, then serve the default model on http://127.0.0.1:8000/v1
	$(RUN) $(BIN)/mlxnb serve

test: $(STAMP) $(WIDGET) lint vitest pytest  ## set up, then run every check and test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

widgets/node_modules/.package-lock.json: widgets/package.json widgets/package-lock.json
	cd widgets && npm ci --no-audit --no-fund

$(WIDGET): widgets/node_modules/.package-lock.json $(wildcard widgets/src/*)
	cd widgets && npm run --silent build

widget: $(WIDGET)

lint: $(STAMP) lint-js
	$(BIN)/ruff check mlxnb tests bench
	$(BIN)/ruff format --check mlxnb tests bench
	$(BIN)/mypy

lint-js: widgets/node_modules/.package-lock.json
	cd widgets && npm run --silent typecheck && npm run --silent check

vitest: widgets/node_modules/.package-lock.json
	cd widgets && npm test --silent

pytest: $(STAMP) $(WIDGET)
	$(RUN) $(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

bench: $(STAMP) $(WIDGET)
	$(RUN) $(BIN)/python -m bench.run_all --out bench/results/latest.json

clean:
	rm -rf $(VENV) widgets/node_modules $(WIDGET)
