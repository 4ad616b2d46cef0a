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
import json
import sys
import time
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


TRAINING_RECORD = "vla_training.json"


def _argument(argv: list[str], name: str) -> str | None:
    prefix = f"--{name}="
    return next((a[len(prefix):] for a in argv if a.startswith(prefix)), None)


def _output_dir(argv: list[str]) -> Path | None:
    """The run's output folder: --output_dir, or, when resuming, the run that --config_path
    (OUT/checkpoints/last/pretrained_model/train_config.json) belongs to."""
    if _argument(argv, "output_dir"):
        return Path(_argument(argv, "output_dir"))
    config_path = _argument(argv, "config_path")
    return Path(config_path).resolve().parents[3] if config_path else None


def record_training(out: Path, wall_time_s: float) -> dict:
    """Add one run's wall time to OUT/vla_training.json (runs resumed from a checkpoint add up) and
    copy it beside the last checkpoint's policy, where the `lerobot` backend's describe() reads it
    (with the number of episodes it trained on, from the dataset's meta/info.json)."""
    total = out / TRAINING_RECORD
    record = json.loads(total.read_text()) if total.is_file() else {"wall_time_s": 0.0, "runs": 0}
    record["wall_time_s"] = round(record["wall_time_s"] + wall_time_s, 1)
    record["runs"] += 1
    policy_dir = out / "checkpoints" / "last" / "pretrained_model"
    train_config = policy_dir / "train_config.json"
    if train_config.is_file():
        config = json.loads(train_config.read_text())
        root = (config.get("dataset") or {}).get("root")
        info = Path(root or "") / "meta" / "info.json"
        if root and info.is_file():
            record["episodes"] = json.loads(info.read_text()).get("total_episodes")
        record["steps"] = config.get("steps")
    total.write_text(json.dumps(record, indent=2))
    if policy_dir.is_dir():
        (policy_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
    return record


def train_main() -> None:
    """`vla-lerobot-train`: LeRobot's own `lerobot-train` (same arguments), imported on our pins.
    The wall time of the run is added to OUT/vla_training.json (see record_training)."""
    prepare_lerobot()
    from lerobot.scripts.lerobot_train import main

    started = time.monotonic()
    main()
    out = _output_dir(sys.argv[1:])
    if out is not None and out.is_dir():
        record_training(out, time.monotonic() - started)
