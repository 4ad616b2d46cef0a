#!/usr/bin/env bash
# Build the vla_msgs interface package with colcon + ament_cmake + rosidl from the venv's wheels.
set -euo pipefail
venv="$(cd "${1:-.venv}" && pwd)"
cd "$(dirname "$0")/.."
export PATH="$venv/bin:$PATH"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
"$venv/bin/python" scripts/fix_wheel_cmake_paths.py
# control_msgs (FollowJointTrajectory): ros-controls' package where it is installed (a ROS install),
# else the definitions in interfaces/control_msgs (no wheel of it exists), rebuilt when they change.
paths=(vla_msgs)
ours="for machines without control_msgs"
if ! "$venv/bin/python" -c "import control_msgs" 2>/dev/null || grep -qs "$ours" "$venv/share/control_msgs/package.xml"; then
  rm -rf build/vendor && mkdir -p build/vendor && cp -r interfaces/control_msgs build/vendor/
  rm -f build/vendor/control_msgs/COLCON_IGNORE
  paths+=(build/vendor/control_msgs)
fi
# Installed straight into the venv: its lib/ is on the wheels' library path and its site-packages on sys.path.
colcon --log-base log build --base-paths "${paths[@]}" --build-base build --install-base "$venv" --merge-install \
  --event-handlers console_cohesion- status- \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python" -DPYTHON_EXECUTABLE="$venv/bin/python"
