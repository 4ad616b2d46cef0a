#!/usr/bin/env bash
# Build the vla_msgs interface package with colcon + ament_cmake + rosidl from the venv's wheels.
set -euo pipefail
venv="$(cd "${1:-.venv}" && pwd)"
cd "$(dirname "$0")/.."
export PATH="$venv/bin:$PATH"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
"$venv/bin/python" scripts/fix_wheel_cmake_paths.py
# Installed straight into the venv: its lib/ is on the wheels' library path and its site-packages on sys.path.
colcon --log-base log build --base-paths vla_msgs --build-base build --install-base "$venv" --merge-install \
  --event-handlers console_cohesion- status- \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python" -DPYTHON_EXECUTABLE="$venv/bin/python"
