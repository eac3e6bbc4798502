# Quickstart:  make run   (fine-tune a small Uni-Mol2 on a QM9 subset, HOMO-LUMO gap)
#              make test  (the test suite)
#              make xtb-data  (GFN2-xTB energy/force domains, datasets/xtb_domains.md)
# Both create .venv and install pinned dependencies on first use. `make run`
# skips the from-source build of torch_scatter, which only the tests and the
# README's GNN example use. The quickstart trains with one PyTorch thread:
# with two, training this small model dropped from 159 to 9 molecules/s
# while another process kept one core busy (OpenMP threads wait on each other).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.13.0
TORCH_SCATTER := torch_scatter==2.1.2
CORE := $(VENV)/.installed-core
FULL := $(VENV)/.installed-full
# The official implementation (unimol_tools, numpy<2.3) in its own virtualenv:
# the equivalence tests run it in a subprocess, the throughput benchmark runs
# both implementations in it.
REF_VENV := .venv-ref
REF := $(REF_VENV)/.installed
# GFN2-xTB (tblite) for datasets/xtb_domains.py and its test, on top of the
# core environment; not a dependency of the package.
XTB := $(VENV)/.installed-xtb
XTB_OUT ?= data/xtb_domains

.PHONY: run test install reference throughput xtb-data clean

install: $(FULL)

$(CORE): requirements.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	touch $(CORE)

$(FULL): $(CORE)
	@echo "Building torch_scatter from source (several minutes, once)..."
	$(PIP) install --quiet --no-build-isolation $(TORCH_SCATTER)
	touch $(FULL)

$(REF): requirements-reference.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(REF_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(REF_VENV)/bin/python -m pip install --quiet -r requirements-reference.txt
	$(REF_VENV)/bin/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(REF)

reference: $(REF)

$(XTB): $(CORE) requirements-xtb.txt
	$(PIP) install --quiet -r requirements-xtb.txt
	touch $(XTB)

# The three GFN2-xTB domains (ANI-1x-, SPICE- and rMD17-like files) into
# $(XTB_OUT): about 6 minutes on 2 cores. Sizes: see datasets/xtb_domains.md.
xtb-data: $(XTB)
	$(PY) datasets/xtb_domains.py --out $(XTB_OUT)

# Ours vs the official implementation, alternating in one process (84M on
# MOSES batch 16, small on QM9 batch 64): table + benchmarks/results/.
throughput: $(REF)
	OMP_NUM_THREADS=1 $(REF_VENV)/bin/python benchmarks/throughput.py \
		--threads 1 --out benchmarks/results/throughput.json

run: $(CORE)
	$(VENV)/bin/unimol2 finetune --dataset qm9 --targets gap --subset 20000 \
		--preset tiny --epochs 6 --lr 5e-4 --max-minutes 9 --threads 1 --out runs/quickstart

test: $(FULL) $(REF) $(XTB)
	UNIMOL2_REFERENCE_PYTHON=$(abspath $(REF_VENV))/bin/python $(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) $(REF_VENV) runs
