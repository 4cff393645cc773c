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

.PHONY: venv test lint demo clean

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

clean:
	rm -rf $(VENV) build install log demo_out
