#!/usr/bin/env bash
# Debian packages for headless MuJoCo rendering (EGL, with OSMesa as fallback) and the FFmpeg 5
# libraries torchcodec decodes LeRobot dataset videos with. Installs only what is missing.
set -euo pipefail
packages=(libegl1 libegl-mesa0 libgl1 libosmesa6 libgles2
          libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
