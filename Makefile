# Two commands do everything on a fresh machine; each creates .venv and installs first.
#   make quickstart   the main job: studies/quickstart.yaml on the embedded dataset (CPU ok)
#   make test         ruff, the import contracts (lint-imports) and the test suite
#   make weights      rebuild the shipped pretrained weights from scratch (a few minutes)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-fast lint clean weights

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/fusionlab run studies/quickstart.yaml

# Pretrains small_cnn on synthetic_shapes in a fresh results folder, then exports it (and
# its card: recipe, source accuracy, SHA-256) over the shipped file.
WEIGHTS_RUN := build/weights-run
weights: $(STAMP)
	rm -rf $(WEIGHTS_RUN)
	$(BIN)/fusionlab run studies/pretrain_synthetic.yaml --results $(WEIGHTS_RUN)
	$(BIN)/fusionlab export pretrain_synthetic --results $(WEIGHTS_RUN) \
	    --out fusion_lab/weights/small_cnn_synthetic.pt

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache setup.cfg
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache setup.cfg

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
