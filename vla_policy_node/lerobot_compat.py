"""Importing lerobot 0.4.4 beside our pins (transformers 5, torch 2.14).

`lerobot.policies` imports every policy's configuration at import time, and the GR00T package's
__init__ imports its model, whose config dataclass does not define under transformers 5
("non-default argument 'backbone_cfg' follows default argument"). We use none of GR00T: its
package is registered empty (its submodules still import on demand, configuration_groot among
them, which lerobot's policy registry needs), so the rest of lerobot imports as released.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

_BROKEN_PACKAGES = ("lerobot.policies.groot",)


def prepare_lerobot() -> None:
    """Make `import lerobot.policies...` work on our pins; a no-op once done or where not needed."""
    lerobot = importlib.util.find_spec("lerobot")     # the top package only: lerobot/__init__ is light
    if lerobot is None:
        raise ImportError("lerobot is not installed (requirements-nodeps.txt installs lerobot==0.4.4)")
    root = Path(list(lerobot.submodule_search_locations)[0])
    for name in _BROKEN_PACKAGES:
        folder = root.joinpath(*name.split(".")[1:])
        if name in sys.modules or not (folder / "__init__.py").is_file():
            continue
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        package.__package__ = name
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = [str(folder)]
        sys.modules[name] = package


def train_main() -> None:
    """`vla-lerobot-train`: LeRobot's own `lerobot-train` (same arguments), imported on our pins."""
    prepare_lerobot()
    from lerobot.scripts.lerobot_train import main

    main()
