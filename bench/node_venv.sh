#!/usr/bin/env bash
# A venv for the node on a machine with no package registry (the lent GPU machine):
#   bash bench/node_venv.sh PYTHON WHEELHOUSE VENV
# PYTHON is the interpreter that already has torch, torchvision, numpy, OpenCV, PyYAML,
# safetensors, tqdm, matplotlib and psutil (on the GPU image: python3, itself a venv). The new
# venv sees those packages and gets rclpy, Fast DDS, the messages and rosbags from WHEELHOUSE
# (bench/make_wheelhouse.sh), offline. Prints the versions it ends up with.
set -euo pipefail
if [[ $# -ne 3 ]]; then
  echo "usage: bash bench/node_venv.sh PYTHON WHEELHOUSE VENV" >&2
  exit 2
fi
PY=$1
WH=$2
VENV=$3
cd "$(dirname "$0")/.."
if ! compgen -G "$WH/*.whl" > /dev/null; then
  echo "node_venv: no wheels in $WH (make them with bash bench/make_wheelhouse.sh)" >&2
  exit 2
fi

rm -rf "$VENV"
if "$PY" -m venv --system-site-packages "$VENV"; then
  pip=("$VENV/bin/python" -m pip)
else
  # No ensurepip in that Python: a venv without pip, filled by the base interpreter's pip.
  "$PY" -m venv --system-site-packages --without-pip "$VENV"
  pip=("$PY" -m pip --python "$VENV/bin/python")
fi
# A venv made from a venv sees the base interpreter's site-packages, not the parent venv's
# (where torch is): a .pth adds the parent's, after the venv's own, so the wheels win.
site_dir=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$site_dir/zz_base_site.pth"

ros_reqs=$(grep -v -e '^#' -e '^colcon' -e '^[[:space:]]*$' requirements-ros.txt | sed 's/ *#.*//')
# shellcheck disable=SC2086  # one requirement per word
"${pip[@]}" install -q --no-index --find-links "$WH" --disable-pip-version-check \
    $ros_reqs rosbags
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md
import sys

import numpy
import rclpy
import torch
from sensor_msgs.msg import Image  # noqa: F401  (the message typesupport loads)

print(f'node venv: Python {sys.version.split()[0]}, torch {torch.__version__} '
      f'(cuda {torch.cuda.is_available()}), numpy {numpy.__version__}, '
      f"rclpy {md.version('ros-rclpy')}, rosbags {md.version('rosbags')}, "
      f'rclpy from {rclpy.__file__}')
PYEOF
