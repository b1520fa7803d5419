# docsrag: `make run` starts the page on the bundled docs, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501
ADDRESS ?= localhost
DOCS ?= docs

.PHONY: install run ingest test lint clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

ingest: install
	$(BIN)/python -m app ingest $(DOCS)

run: ingest
	$(BIN)/streamlit run streamlit_app.py --server.headless true --server.address $(ADDRESS) --server.port $(PORT) --browser.gatherUsageStats false

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .docsrag .pytest_cache .ruff_cache
