# make install   create .venv and install fer_lightning with its pinned dependencies
# make pipeline  run the paper-000 DAG on the embedded synthetic faces (or DATA=fer2013.csv.gz)
# make test      the test suite
# make bench     performance figures with targets and PASS/FAIL: overhead, data path, switches,
#                concurrent stages, cache, probes, growth (DATA=fer2013.csv.gz for real data),
#                predict vs the `fer` package (FER_PYTHON=a Python that can import fer)
# make soak      kill -9 crash soak of a pipeline (10 trials)
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install pipeline test bench soak

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"

pipeline:
ifdef DATA
	$(PY) -m fer_lightning pipeline run configs/pipelines/fer2013_fusion.yaml --data $(DATA) --out $(OUT)/fer2013_fusion
else
	$(PY) -m fer_lightning pipeline run configs/pipelines/fer2013_fusion_demo.yaml --out $(OUT)/fer2013_fusion_demo
endif

# one pytest worker per core (each pinned to its own core by tests/conftest.py)
TEST_WORKERS ?= $(shell nproc)
test:
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench:
	status=0; \
	$(PY) bench/overhead.py --switches || status=1; \
	$(PY) bench/concurrency.py || status=1; \
	$(PY) bench/probes.py $(FEATURES) || status=1; \
	$(PY) bench/growth.py $(if $(DATA),--data $(DATA)) || status=1; \
	$(if $(FER_PYTHON),$(PY) bench/predict_vs_fer.py --fer-python $(FER_PYTHON) --photos 120 || status=1;) \
	exit $$status

soak:
	$(PY) bench/soak_kill.py --trials 10
