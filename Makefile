# Two commands do everything: `make run` (default pipeline -> reports/default/) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN ?= default
PARAMS ?= params/default.yaml

.PHONY: run test notebooks bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# DeepSpeed builds against the installed torch (its sdist imports torch). The one op it loads on CPU, the
	# shared-memory communication op, is compiled here; else every first multi-process run compiles it (~1.5 min).
	# No wheel cache: a cached wheel built without the op would be taken instead.
	DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 $(PY) -m pip install --quiet --no-build-isolation --no-cache-dir \
		-c constraints.txt deepspeed
	touch $@

run: $(VENV)/.installed
	$(PY) -m brainvlm run --params $(PARAMS) --run $(RUN)

test: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# Regenerate every .ipynb from its .py source (the .py files are what people edit).
notebooks: $(VENV)/.installed
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*.py

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/bench_volumes.py
	$(PY) benchmarks/bench_cohort.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf reports/*/ .cache
