# Three commands do everything: `make run` (default pipeline -> reports/default/), `make test`, `make lab`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN ?= default
PARAMS ?= params/default.yaml
LOCK := requirements/lock.txt
SEEDS ?= 0,1,2,3,4
NBSTRIP_KEYS := metadata.language_info metadata.widgets

.PHONY: run test lab lock seeds notebooks bench system-packages clean

# Every distribution comes from the lock (requirements/lock.txt): the same .venv today and next month.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $$(grep -E '^(pip|setuptools|wheel)==' $(LOCK))
	# torch==2.13.0: pip takes a local CPU wheel where pip's find-links provide one, else PyPI's build.
	$(PY) -m pip install --quiet -c $(LOCK) torch
	$(PY) -m pip install --quiet --no-build-isolation -c $(LOCK) -e ".[dev]"
	# DeepSpeed builds against the installed torch (its sdist imports torch). The one op it loads on CPU, the
	# shared-memory communication op, is compiled here; else every first multi-process run compiles it (~1.5 min).
	# No wheel cache: a cached wheel built without the op would be taken instead.
	DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 $(PY) -m pip install --quiet --no-build-isolation --no-cache-dir \
		-c $(LOCK) deepspeed
	$(PY) -m brainvlm.app.lab_setup --venv $(VENV)
	# Tracked notebooks stay clean: git sees each .ipynb without outputs or volatile metadata (.gitattributes).
	-git config filter.nbstripout.clean '$(VENV)/bin/nbstripout --keep-id --extra-keys "$(NBSTRIP_KEYS)"'
	-git config filter.nbstripout.smudge cat
	touch $@

# Regenerate the lock from pyproject.toml (package, dev, bench and gpu extras) with the pinned pip-compile.
# The local label of a CPU torch wheel is dropped: torch==2.13.0 admits the CPU wheel and a cluster's CUDA build.
lock: $(VENV)/.installed
	$(VENV)/bin/pip-compile --quiet --allow-unsafe --no-emit-find-links --no-emit-index-url --strip-extras \
		--extra dev --extra bench --extra gpu --upgrade -o $(LOCK) pyproject.toml
	sed -i -E 's/^(torch==[0-9.]+)\+[a-z0-9.]+/\1/' $(LOCK)

run: $(VENV)/.installed
	$(PY) -m brainvlm run --params $(PARAMS) --run $(RUN)

# The default over five seeds, then one comparison of the five runs (reports/seeds/compare/index.html).
seeds: $(VENV)/.installed
	$(PY) -m brainvlm sweep --params $(PARAMS) --seeds $(SEEDS) --name seeds

# System packages the tests start (SLURM, munge, Chromium), installed when missing if we are root with apt.
system-packages:
	bash tools/system_packages.sh

# The browser driver of tests/browser (playwright-core, locked; it drives Debian's chromium, no download).
tests/browser/node_modules/.installed: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: $(VENV)/.installed system-packages tests/browser/node_modules/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder tests -p no:cacheprovider --durations=25

# JupyterLab from .venv on localhost, with a token; the URL it prints opens it.
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --notebook-dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# Regenerate every .ipynb from its .py source (the .py files are what people edit).
notebooks: $(VENV)/.installed
	$(VENV)/bin/jupytext --sync notebooks/[0-9]*.py

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[bench]"
	$(PY) benchmarks/bench_volumes.py
	$(PY) benchmarks/bench_cohort.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf reports/*/ .cache
