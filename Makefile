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
