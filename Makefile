# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Both create the project-local virtualenv .venv. torch==2.13.0 (a local CPU wheel on these
# machines) is installed FIRST so that nothing later pulls a CUDA build; torchvision is never installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stemob-installed
# `make test` also installs the robosuite extra (robosuite 1.5.x, numpy<2) so that the robosuite
# backend's tests run; the core install (setup, demo) does not need it.
STAMP_ROBOSUITE := $(VENV)/.stemob-robosuite-installed
export MUJOCO_GL ?= egl
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo invert-demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps robomimic==0.3.0
	@$(BIN)/python -c "import importlib.util, sys; sys.exit('torchvision got installed: it breaks diffusers here, remove it' if importlib.util.find_spec('torchvision') else 0)"
	touch $(STAMP)

setup: $(STAMP)

$(STAMP_ROBOSUITE): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,robosuite]'
	@$(BIN)/python -c "import importlib.util, sys; sys.exit('torchvision got installed: it breaks diffusers here, remove it' if importlib.util.find_spec('torchvision') else 0)"
	touch $(STAMP_ROBOSUITE)

# The main job (README): record lift_cube demos, build the Stem-OB cache with the embedded prior,
# train the small Diffusion Policy on inverted observations, evaluate clean + 3 perturbations.
demo: setup
	$(BIN)/python train.py

# Inversion only: the shipped tabletop images, clean and perturbed, at several k.
invert-demo: setup
	$(BIN)/python -m stemob.demo --output_dir outputs/demo

test: $(STAMP_ROBOSUITE)
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/bench_inversion.py --model embedded
	$(BIN)/python benchmarks/bench_envs.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
