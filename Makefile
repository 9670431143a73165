# ssvif_ros developer entry points. `make demo` and `make test` are the two set-up commands.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# ROS 2 settings for every target that talks DDS: Fast DDS, traffic kept on this host.
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
PYTEST_ARGS ?=

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' || \
	  { echo 'ssvif_ros needs Python >= 3.10 (3.11 tested)'; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) test

lint: $(STAMP)
	$(PY) -m flake8 ssvif_ros ssvif_train launch test bench setup.py

demo: $(STAMP)
	$(PY) -m ssvif_ros.demo

bench: $(STAMP)
	$(PY) bench/train_throughput.py
	$(PY) bench/metrics_speed.py
	$(PY) bench/node_latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Reproduce the embedded default model (CPU, about two and a half hours on 2 cores; doc/deployment.md):
# SSVIF with semantic classes on the MSRS train pairs with boxes plus unlabelled RoadScene pairs
# (rtfusion_semantic.yaml), fine-tuned from that run with box cores of 0.8 and weighted bikes
# (rtfusion_semantic_finetune.yaml), then on whole-height MSRS frames without vertical flips and
# with CSC off (rtfusion_semantic_frames.yaml), class offsets calibrated on that run's validation
# split (ssvif-calibrate), exported into ssvif_ros/models/default, then
# scored on the MSRS validation pairs beside the model it replaces, the thermal rule and the
# max-luma rule, and timed beside the previous one.
MSRS ?= ../shared/data/msrs
ROADSCENE ?= ../shared/data/roadscene
RUNS ?= runs/default-model
.PHONY: default-model
default-model: $(STAMP)
	@start=$$(date +%s); \
	rm -rf $(RUNS)/previous && mkdir -p $(RUNS) && cp -r ssvif_ros/models/default $(RUNS)/previous && \
	$(VENV)/bin/ssvif-train config/train/rtfusion_semantic.yaml --data $(MSRS)/train \
	  --extra $(ROADSCENE) --out $(RUNS)/semantic --overwrite --set train.progress=false && \
	$(VENV)/bin/ssvif-train config/train/rtfusion_semantic_finetune.yaml --data $(MSRS)/train \
	  --extra $(ROADSCENE) --out $(RUNS)/finetune --overwrite --set train.progress=false \
	  --set train.init=$(RUNS)/semantic/best.pt && \
	$(VENV)/bin/ssvif-export $(RUNS)/finetune/best.pt --out $(RUNS)/finetune-model \
	  --copy-checkpoint --seg-upsample nearest && \
	$(VENV)/bin/ssvif-train config/train/rtfusion_semantic_frames.yaml --data $(MSRS)/train \
	  --out $(RUNS)/frames --overwrite --set train.progress=false \
	  --set train.init=$(RUNS)/finetune-model/model.pt && \
	$(VENV)/bin/ssvif-calibrate $(RUNS)/frames/best.pt --data $(MSRS)/train \
	  --seg-upsample nearest --out $(RUNS)/frames/best-calibrated.pt && \
	$(VENV)/bin/ssvif-export $(RUNS)/frames/best-calibrated.pt --out ssvif_ros/models/default \
	  --copy-checkpoint --seg-upsample nearest && \
	$(PY) bench/model_quality.py --model new=ssvif_ros/models/default \
	  --model previous=$(RUNS)/previous --data $(MSRS) --json $(RUNS)/quality.json && \
	$(VENV)/bin/ssvif-bench --model ssvif_ros/models/default --compare $(RUNS)/previous \
	  --threads 2 --runs 200 && \
	echo "default-model: done in $$(( ($$(date +%s) - start) / 60 )) min"
