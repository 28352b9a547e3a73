# make install   create .venv and install fer_lightning with its pinned dependencies
# make pipeline  run the paper-000 DAG on the embedded synthetic faces (or DATA=fer2013.csv.gz)
# make test      the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install pipeline test

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

test:
	$(PY) -m pytest -q
