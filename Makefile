# mmguard — the two README commands: `make demo` and `make test`.
# Both create or reuse .venv/ in the repo root. torch is pinned to the CPU wheel 2.13.0.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmguard-installed
DEMO_OUT ?= demo_out
PYTEST_WORKERS ?= 2

.PHONY: demo test lint venv sysdeps bench table1 clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

venv: sysdeps $(STAMP)

# Offscreen rendering (MuJoCo digital twin) needs EGL/GL/OSMesa. Installed when missing and
# we are root; otherwise the one-line apt-get command is printed.
sysdeps:
	@missing=""; for p in libegl1 libgl1 libosmesa6; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "note: offscreen rendering needs:$$missing (no apt-get here; install them with your package manager)"; \
	  elif [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; offscreen rendering will be unavailable"; \
	  else echo "run: sudo apt-get install -y$$missing"; fi; \
	fi

demo: venv
	$(VENV)/bin/mmguard demo --out $(DEMO_OUT)

test: venv
	OMP_NUM_THREADS=1 MMGUARD_DATA_DIR=$${MMGUARD_DATA_DIR:-$(abspath ../shared/data)} \
	  $(PY) -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: venv
	$(PY) benchmarks/bench_emma_throughput.py

# The MMSSL paper's table 1 (issue #14): both twins, 8 guards x 5 seeds, as Ray tasks on this
# machine's CPUs (ENGINE=local runs them in this process); resumes a killed run. docs/results/table1.md
# Weld: camera + the 62-d kinematics, as the MMSSL protocol (its file also holds per-robot copies).
TABLE1_TWINS ?= /tmp/twins
TABLE1_OUT ?= runs
ENGINE ?= ray
TABLE1_GUARDS := mmae,dae,mmfr,mmcf,ccm,mmgan,mmugan,mmssl,restore
table1: venv
	@mkdir -p $(TABLE1_TWINS) $(TABLE1_OUT)
	$(VENV)/bin/mmguard twin generate --scene arm --episodes 60 --steps 100 --seed 1 --workers 2 --out $(TABLE1_TWINS)/arm.h5
	$(VENV)/bin/mmguard twin generate --scene weld --episodes 60 --steps 100 --seed 0 --workers 2 --out $(TABLE1_TWINS)/weld.h5
	for scene in arm weld; do \
	  data="twin:$(TABLE1_TWINS)/$$scene.h5"; \
	  if [ $$scene = weld ]; then data="$$data?modalities=camera,kinematics"; fi; \
	  $(VENV)/bin/mmguard bench --data "$$data" --guards $(TABLE1_GUARDS) --seeds 5 \
	    --out $(TABLE1_OUT)/t1-$$scene --engine $(ENGINE) || exit $$?; \
	  $(VENV)/bin/mmguard mmssl table1 $(TABLE1_OUT)/t1-$$scene --out $(TABLE1_OUT)/t1-$$scene/table1.md || exit $$?; \
	done

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
