# `make demo` and `make test` each install everything into .venv first (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "compare needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ray,slurm,wandb,docs]'
	touch $@

# The main job on its defaults: train an ANN DQN on CartPole-v1 and evaluate it (~2 min on 2 CPU cores).
demo: install
	$(BIN)/compare run

# Two pytest workers, one test module each at a time, in the order the modules first appear (a
# module's shared fixtures are built once; the learning modules first); every run a test starts is
# pinned to one thread, so the two workers do not spin against each other.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

test: install
	$(PYTEST)

# The development tier: no learning runs and no test measured over ~5 s (marker `slow`).
test-fast: install
	$(PYTEST) -m "not learning and not slow"

# The documentation site (docs/, mkdocs.yml) into site/; every warning (a broken link or anchor,
# a page outside the navigation, a docstring the API reference cannot read) is an error.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(BIN)/compare bench

clean:
	rm -rf $(VENV) results/runs site
