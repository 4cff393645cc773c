#!/usr/bin/env bash
# Wheelhouse for running the node on the lent GPU machine (Python 3.12, torch already there, no
# package registry): the cp312 wheels of rclpy with Fast DDS, the rmw layer, the messages the node
# and the replay harness use (sensor, std, std_srvs, diagnostic, lifecycle), everything they
# depend on, and rosbags (make_bag, replay). Run it here, where the registry is reachable:
#   bash bench/make_wheelhouse.sh            # -> .whl/ (ignored by git), about 50 MB
# then carry .whl to the GPU machine and run `WHEELHOUSE=.whl bash bench/gpu_check.sh` there.
# Env: WHEELHOUSE (.whl), PYVER (3.12), PYTHON (python3; any pip does the download),
#      SKIP (packages the GPU image already has, not carried; see below).
set -euo pipefail
cd "$(dirname "$0")/.."
WH=${WHEELHOUSE:-.whl}
PYVER=${PYVER:-3.12}
PY=${PYTHON:-python3}
# Already in the GPU image's Python (device KINDS.md package list): numpy, PyYAML, setuptools,
# typing_extensions. Carrying them would only add size (numpy alone is 17 MB).
SKIP=${SKIP:-numpy pyyaml setuptools typing_extensions}
CONSTRAINTS=constraints-py${PYVER/./}.txt

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The runtime ROS wheels of requirements-ros.txt (colcon is a build tool: not carried).
grep -v -e '^#' -e '^colcon' -e '^[[:space:]]*$' requirements-ros.txt > "$tmp/ros.txt"
pin() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }

rm -rf "$WH"
mkdir -p "$WH"
# empy (a dependency of rosidl_adapter) is published as an sdist only; its wheel is pure Python.
"$PY" -m pip wheel -q --no-deps -w "$tmp/local" "empy==$(pin empy)"
"$PY" -m pip download -q -d "$WH" --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 --find-links "$tmp/local" -c "$CONSTRAINTS" \
    -r "$tmp/ros.txt" "rosbags==$(pin rosbags)"
cp "$tmp"/local/*.whl "$WH"/
for name in $SKIP; do
  # Wheel file names use '_' for '-' and may differ in case (PyYAML).
  find "$WH" -maxdepth 1 -iname "${name//-/_}-*.whl" -delete
done
echo "wheelhouse $WH: $(ls "$WH" | wc -l) wheels, $(du -sh "$WH" | cut -f1) (Python $PYVER;" \
     "not carried: $SKIP)"
