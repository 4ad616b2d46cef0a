"""Point the CMake exports of the ROS wheels at this virtualenv's Python and numpy headers.

The wheels were built in a manylinux image: their exported targets name
/opt/python/cp311-cp311/include/python3.11 and that image's numpy include folder, and CMake
refuses targets with non-existent include paths. Rewrites those paths in <venv>/share/**/*.cmake.
Idempotent.
"""

import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_PREFIX = "/opt/python/cp311-cp311"


def main() -> int:
    venv = Path(sys.prefix)
    replacements = {
        f"{BUILD_PREFIX}/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
        f"{BUILD_PREFIX}/lib/python3.11/site-packages/numpy/core/include": numpy.get_include(),
        f"{BUILD_PREFIX}/include/python3.11": sysconfig.get_paths()["include"],
    }
    changed = 0
    for path in list((venv / "share").rglob("*.cmake")) + list((venv / "lib").rglob("site-packages/*/share/**/*.cmake")):
        text = path.read_text(errors="surrogateescape")
        if BUILD_PREFIX not in text:
            continue
        for old, new in replacements.items():
            text = text.replace(old, new)
        path.write_text(text, errors="surrogateescape")
        changed += 1
    print(f"fix_wheel_cmake_paths: rewrote {changed} CMake files under {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
