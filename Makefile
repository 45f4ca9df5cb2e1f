# The two commands a newcomer types are `make demo` and `make test` (see README.md).
# Everything installs into .venv in the project root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FAISS ?= cpu            # `make FAISS=gpu ...` on a CUDA 12 workstation
CORES ?= 2
DEMO_TARGET ?= all

.PHONY: setup demo test test-fast lint dryrun clean-results

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[$(strip $(FAISS)),llm,dev]"
	touch $@

setup: $(VENV)/.installed

# Rules call `facenet-evc`, so the venv's bin goes first on the PATH.
RUN := PATH="$(abspath $(BIN)):$$PATH"

demo: setup
	$(RUN) snakemake --cores $(CORES) $(DEMO_TARGET)

test: setup
	$(RUN) python -m pytest -q

# Day-to-day: everything but the tests that train models or run the workflow (about a minute).
test-fast: setup
	$(RUN) python -m pytest -q -m "not slow"

# The workflow's rules: Snakemake's linter and snakefmt's formatting (CI runs both).
lint: setup
	$(RUN) snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

dryrun: setup
	$(RUN) snakemake -n $(DEMO_TARGET)

clean-results:
	rm -rf results
