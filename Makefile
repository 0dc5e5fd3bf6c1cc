# The two commands: `make demo` (fresh machine -> forecasts) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export MUSICTREND_HOME ?= $(CURDIR)/.musictrend
RAW_DIR := $(or $(MUSICTREND_RAW_DIR),$(MUSICTREND_HOME)/raw)

.PHONY: install spark java browser demo lint test mutants cluster-demo ui mlflow-ui bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: install
	@test -f "$(RAW_DIR)/mars_tianchi_user_actions.csv" || $(BIN)/musictrend sample --source tianchi-s1 --out "$(RAW_DIR)"
	$(BIN)/musictrend run --raw-dir "$(RAW_DIR)"

# The Spark engine (optional extra): pyspark from PyPI on Debian's Java 17 (never a download of Spark itself).
spark: install java $(VENV)/.spark-installed

$(VENV)/.spark-installed: pyproject.toml
	$(BIN)/pip install -q -e '.[test,spark]'
	touch $@

java:
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null)

# The end-to-end tests drive Debian's Chromium (never a browser download).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Two pytest-xdist workers, one per core; --dist loadfile keeps each file on one worker, so a module's
# fixture (a whole run, a server, a cluster) is built once.
# Style, types and the import rules (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]).
LINTED := musictrend_dagster tests benchmarks
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy musictrend_dagster
	$(BIN)/lint-imports

test: lint spark browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

# Deliberate code changes the suite must notice (tests/mutants/mutants.toml); reports survivors.
mutants: install
	$(BIN)/python tests/mutants/run_mutants.py

# The whole pipeline on a real Spark standalone cluster on 127.0.0.1 (a master and 2 one-core
# workers from the pyspark distribution), stopped at the end; prints the master UI's address.
cluster-demo: spark
	@test -f "$(RAW_DIR)/mars_tianchi_user_actions.csv" || $(BIN)/musictrend sample --source tianchi-s1 --out "$(RAW_DIR)"
	$(BIN)/python -m musictrend_dagster.core.data.engines.cluster --workers 2 -- $(BIN)/musictrend run --raw-dir "$(RAW_DIR)"

ui: install
	$(BIN)/musictrend ui

mlflow-ui: install
	$(BIN)/musictrend mlflow-ui

bench: install
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_models.py --e2e
	$(BIN)/python benchmarks/bench_ensemble_training.py

clean:
	rm -rf "$(MUSICTREND_HOME)"
