"""Robot YAML loading: the shipped profiles validate; each kind of mistake fails with file, key and reason."""

import shutil

import pytest
import yaml

from vla_policy_node.core.embodiment import EmbodimentConfigError, load_embodiment, load_robot


@pytest.mark.parametrize("name", ["metaworld_sawyer", "panda_ros2_control"])
def test_shipped_robots_load(name):
    emb = load_robot(name)
    assert emb.name == name
    assert emb.action_stats["q01"].shape == (emb.config.action.dim,)
    assert emb.state_stats["q99"].shape == (len(emb.config.state.names),)


def test_prompt_renders_qwen_vla_template():
    emb = load_robot("metaworld_sawyer")
    assert emb.render_prompt("open the drawer") == (
        "The robot is a Rethink Sawyer with single arm. The control frequency is 80 Hz. Please predict the "
        "next 8 control actions to execute the following task: open the drawer.")
    # a checkpoint trained for another chunk length renders its own (qwen_vla)
    assert "predict the next 8 control actions" in emb.render_prompt("open the drawer", chunk_size=8)


@pytest.fixture
def broken(tmp_path, robots_dir):
    """Write a modified copy of the Sawyer profile; returns (path, error message)."""
    base = yaml.safe_load((robots_dir / "metaworld_sawyer.yaml").read_text())

    def make(edit):
        data = yaml.safe_load(yaml.safe_dump(base))
        edit(data)
        path = tmp_path / "robot.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(EmbodimentConfigError) as info:
            load_embodiment(path)
        message = str(info.value)
        assert str(path) in message, message
        return message
    return make


def test_unknown_key(broken):
    msg = broken(lambda d: d["action"].update(chunk_length=8))
    assert "action.chunk_length: unknown key" in msg


def test_unknown_top_level_key(broken):
    msg = broken(lambda d: d.update(camera=[]))
    assert "camera: unknown key" in msg


def test_wrong_dimension_units(broken):
    msg = broken(lambda d: d["action"].update(units=["m", "m"]))
    assert "action.units" in msg and "expected 4 entries" in msg and "got 2" in msg


def test_wrong_dimension_limits(broken):
    msg = broken(lambda d: d["limits"].update(action_max=[1.0, 1.0, 1.0]))
    assert "limits.action_max" in msg and "expected 4" in msg


def test_inconsistent_limits(broken):
    msg = broken(lambda d: d["limits"].update(action_min=[-1.0, 2.0, -1.0, -1.0]))
    assert "limits.action_min[1]" in msg and "dy" in msg


def test_inconsistent_state_names(broken):
    msg = broken(lambda d: d["state"].update(sources=["ee.x", "ee.y"]))
    assert "state.sources" in msg and "one per state.names" in msg


def test_bad_state_source(broken):
    msg = broken(lambda d: d["state"].update(sources=["ee.x", "ee.y", "ee.w", "joint.r_close"]))
    assert "state.sources[2]" in msg


def test_execute_more_than_horizon(broken):
    msg = broken(lambda d: d["action"].update(execute_per_chunk=d["action"]["horizon"] + 1))
    assert "action.execute_per_chunk" in msg and "horizon" in msg


def test_missing_normalization_statistics(broken):
    msg = broken(lambda d: d["normalization"].pop("action"))
    assert "normalization.action: missing" in msg and "q01 and q99" in msg


def test_missing_one_statistic(broken):
    msg = broken(lambda d: d["normalization"]["action"].pop("q99"))
    assert "normalization.action.q99: missing" in msg


def test_misshaped_statistics(broken):
    msg = broken(lambda d: d["normalization"]["state"].update(q01=[0.0, 0.0]))
    assert "normalization.state.q01: shape (2,)" in msg and "(4,)" in msg


def test_statistics_for_other_mode(broken):
    msg = broken(lambda d: d["normalization"].update(mode="mean_std"))
    assert "normalization.action.mean: missing" in msg


def test_quantiles_out_of_order(broken):
    msg = broken(lambda d: d["normalization"]["action"].update(q99=[1.0, -2.0, 1.0, 1.0]))
    assert "normalization.action.q99" in msg and "below q01" in msg


def test_wrong_type(broken):
    msg = broken(lambda d: d["action"].update(control_rate_hz="fast"))
    assert "action.control_rate_hz" in msg


def test_unknown_contract(broken):
    msg = broken(lambda d: d["output"].update(contract="ros1"))
    assert "output.contract" in msg


def test_per_timestep_statistics_accepted(tmp_path, robots_dir):
    data = yaml.safe_load((robots_dir / "metaworld_sawyer.yaml").read_text())
    h = data["action"]["horizon"]
    data["normalization"]["action"] = {"q01": [[-1.0] * 4] * h, "q99": [[1.0] * 4] * h}
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_embodiment(path).action_stats["q01"].shape == (h, 4)


def test_statistics_file_missing(tmp_path, robots_dir):
    shutil.copy(robots_dir / "panda_ros2_control.yaml", tmp_path / "panda.yaml")
    with pytest.raises(EmbodimentConfigError, match=r"panda.yaml: normalization.file: 'panda_ros2_control_stats.yaml' not found"):
        load_embodiment(tmp_path / "panda.yaml")


def test_urdf_limits_cross_checked(tmp_path, robots_dir):
    data = yaml.safe_load((robots_dir / "panda_ros2_control.yaml").read_text())
    data["limits"]["joint_position_max"][3] = 0.5   # beyond the URDF's -0.0698
    shutil.copy(robots_dir / "panda_ros2_control_stats.yaml", tmp_path)
    path = tmp_path / "panda.yaml"
    path.write_text(yaml.safe_dump(data).replace("panda_ros2_control_stats", "panda_ros2_control_stats"))
    with pytest.raises(EmbodimentConfigError, match=r"limits.joint_position_max\[3\]: 0.5 for panda_joint4"):
        load_embodiment(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(EmbodimentConfigError, match="not found"):
        load_embodiment(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(EmbodimentConfigError, match="bad.yaml: not valid YAML"):
        load_embodiment(tmp_path / "bad.yaml")


def test_a_workspace_the_action_space_cannot_honour_is_refused(broken, tmp_path, robots_dir):
    msg = broken(lambda d: d["limits"].pop("ee_delta_scale_m"))
    assert "limits.workspace: an ee_delta robot needs limits.ee_delta_scale_m" in msg
    data = yaml.safe_load((robots_dir / "panda_ros2_control.yaml").read_text())
    data.pop("kinematics")
    shutil.copy(robots_dir / "panda_ros2_control_stats.yaml", tmp_path)
    path = tmp_path / "panda.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EmbodimentConfigError, match=r"panda.yaml: limits.workspace: a joint_position robot needs "
                                                    r"kinematics"):
        load_embodiment(path)
