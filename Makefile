# dmnet: two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
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

.PHONY: venv test lint demo demo-real clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-core.txt requirements-ros.txt setup.py
	python3 -m venv $(VENV_FLAGS) $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-core.txt $(ROS_REQ)
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

lint: venv
	$(VENV)/bin/ruff check dmnet_core dmnet_ros launch test bench setup.py

test: venv lint
	$(PY) -m pytest -q test

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
	rm -rf $(VENV) build install log demo_out
