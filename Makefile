# Quickstart:  make run   (fine-tune a small Uni-Mol2 on a QM9 subset, HOMO-LUMO gap)
#              make test  (the test suite)
# Both create .venv and install pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
TORCH_SCATTER := torch_scatter==2.1.2
STAMP := $(VENV)/.installed

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-build-isolation $(TORCH_SCATTER)
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/unimol2 finetune --dataset qm9 --targets gap --subset 20000 \
		--preset small --epochs 6 --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) runs
