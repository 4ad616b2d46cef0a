"""Recorded episodes -> training arrays: one real episode recorded through the graph and read back
with load_episode / load_dataset / chunk_samples, plus bags written directly with rosbags."""

import json
import shutil

import numpy as np
import pytest
from conftest import record_episodes
from rosbags.rosbag2 import Reader, Writer

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.data.bags import make_typestore, read_bag
from vla_policy_node.data.dataset import DatasetError, Episode, chunk_samples, load_dataset, load_episode

STEPS = 30
DT = 0.0125
CAM = "/vla/sim/camera/corner/image_raw"
CMD = "/vla/sim/command"


@pytest.fixture(scope="module")
def robot():
    return load_robot("metaworld_sawyer")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    record_episodes(out, 67, "[button-press]", "[3]", STEPS)
    bag = out / "bags" / "button-press_s3"
    assert bag.is_dir(), f"no bag recorded under {out / 'bags'}"
    raw = {}
    for topic, _, stamp, msg in read_bag(bag, topics=[CAM, CMD, "/vla/sim/ee_pose", "/joint_states",
                                                       "/vla/sim/success"]):
        raw.setdefault(topic, []).append((stamp, msg))
    report = json.loads((out / "report.json").read_text())
    return out, bag, raw, report["episodes"][0]


def _ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _first_by_stamp(items):
    out = {}
    for _, msg in items:
        out.setdefault(_ns(msg), msg)
    return out


@pytest.fixture(scope="module")
def episode(recorded, robot):
    _, bag, _, _ = recorded
    return load_episode(bag, robot)


# ---- one real episode ------------------------------------------------------------------------
@pytest.mark.slow      # reads an episode recorded through the full graph
def test_episode_rows_pair_each_command_with_the_state_it_answered(recorded, episode):
    _, bag, raw, entry = recorded
    ep = episode
    T = len(ep.actions)
    assert T >= 20
    assert ep.task == "button-press" and ep.seed == 3 and ep.bag == str(bag)
    assert ep.instruction == entry["instruction"] != ""
    assert ep.frames["corner"].shape == (T, 128, 128, 3) and ep.frames["corner"].dtype == np.uint8
    assert ep.states.shape == (T, 4) and ep.states.dtype == np.float32
    assert ep.actions.shape == (T, 4) and ep.actions.dtype == np.float32
    assert ep.stamps.shape == (T,) and ep.stamps.dtype == np.float64

    commands = _first_by_stamp(raw[CMD])
    images = _first_by_stamp(raw[CAM])
    poses = _first_by_stamp(raw["/vla/sim/ee_pose"])
    joints = _first_by_stamp(raw["/joint_states"])
    answered = [s for s in sorted(commands) if s in images and s in poses and s in joints]
    assert len(answered) == T and ep.skipped == len(commands) - T
    np.testing.assert_array_equal(np.round(ep.stamps * 1e9).astype(np.int64), answered)
    np.testing.assert_array_equal(ep.actions, np.array([commands[s].values for s in answered], np.float32))
    ee = np.array([[poses[s].pose.position.x, poses[s].pose.position.y, poses[s].pose.position.z]
                   for s in answered], np.float32)
    np.testing.assert_array_equal(ep.states[:, :3], ee)
    fingers = [joints[s].position[list(joints[s].name).index("r_close")] for s in answered]
    np.testing.assert_array_equal(ep.states[:, 3], np.array(fingers, np.float32))
    np.testing.assert_allclose(np.diff(ep.stamps), DT, atol=1e-9)
    # frames[k] is the image rendered at the commanded state (128x128 already: no resize)
    for k in (0, T // 2, T - 1):
        img = images[answered[k]]
        np.testing.assert_array_equal(ep.frames["corner"][k],
                                      np.frombuffer(bytes(img.data), np.uint8).reshape(128, 128, 3))
    frames = ep.frames["corner"]
    assert frames[0].std() > 5.0                                     # a rendered scene, not a blank
    assert np.abs(frames[-1].astype(int) - frames[0]).mean() > 0.5   # the arm moved in view
    assert np.linalg.norm(ep.states[-1, :3] - ep.states[0, :3]) > 0.02


@pytest.mark.slow      # reads an episode recorded through the full graph
def test_the_graph_records_each_message_compressed(recorded):
    """The evaluator's default bag_compression: every message zstd-compressed (rosbag2 message mode),
    and read_bag (above) hands back the messages as they crossed DDS."""
    _, bag, raw, _ = recorded
    with Reader(bag) as reader:
        assert (reader.compression_mode, reader.compression_format) == ("message", "zstd")
    frame = raw[CAM][0][1]
    assert len(frame.data) == frame.height * frame.step > 0


def test_a_compressed_bag_reads_back_the_same_messages_in_less_space(tmp_path):
    from vla_policy_node.data.bags import BagWriter
    from vla_policy_node.nodes.episode_recorder import EpisodeRecorder

    typestore = make_typestore()
    image = typestore.types["sensor_msgs/msg/Image"]
    header = typestore.types["std_msgs/msg/Header"]
    stamp = typestore.types["builtin_interfaces/msg/Time"]
    scene = np.zeros((240, 320, 3), np.uint8)
    scene[:, :, 1] = 90                                  # a table, and a red dot moving over it
    messages = []
    for i in range(20):
        frame = scene.copy()
        frame[100:110, 10 * i:10 * i + 10] = (230, 20, 20)
        msg = image(header=header(stamp=stamp(sec=0, nanosec=i * 12_500_000), frame_id="scene"), height=240,
                    width=320, encoding="rgb8", is_bigendian=0, step=960, data=frame.reshape(-1))
        messages.append(typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    sizes, read = {}, {}
    for compression in ("none", "zstd"):
        writer = BagWriter(tmp_path / compression, typestore, "sqlite3", compression)
        for i, cdr in enumerate(messages):
            writer.write(CAM, "sensor_msgs/msg/Image", i * 12_500_000, cdr)
        writer.close()
        sizes[compression] = sum(f.stat().st_size for f in (tmp_path / compression).rglob("*") if f.is_file())
        read[compression] = [bytes(m.data) for _, _, _, m in read_bag(tmp_path / compression)]
    assert read["zstd"] == read["none"] and len(read["zstd"]) == 20
    assert sizes["zstd"] < sizes["none"] / 5, sizes
    with pytest.raises(ValueError, match="bag compression 'lz4' unknown"):
        BagWriter(tmp_path / "other", typestore, "sqlite3", "lz4")
    with pytest.raises(ValueError, match="parameter bag_compression: 'lz4' unknown; use none or zstd"):
        EpisodeRecorder(None, tmp_path, [], "sqlite3", "lz4")


@pytest.mark.slow      # reads an episode recorded through the full graph
def test_load_dataset_follows_the_report_and_its_success_filter(recorded, robot):
    out, bag, raw, entry = recorded
    everything = load_dataset(out, robot, successful_only=False)
    assert len(everything) == 1
    ep = everything[0]
    assert (ep.task, ep.seed, ep.success) == ("button-press", 3, entry["success"])
    assert len(ep.actions) >= 20 and ep.bag == str(bag)
    filtered = load_dataset(out, robot)
    if entry["success"]:
        assert len(filtered) == 1 and filtered[0].success
    else:
        assert entry["steps"] >= STEPS and filtered == []
    # bag folders directly: success comes from the bag's last /vla/sim/success
    last_success = bool(raw["/vla/sim/success"][-1][1].data)
    direct = load_dataset([bag], robot, successful_only=False)
    assert len(direct) == 1 and direct[0].success == last_success
    np.testing.assert_array_equal(direct[0].actions, ep.actions)
    assert len(load_dataset([bag], robot)) == int(last_success)


@pytest.mark.slow      # reads an episode recorded through the full graph
def test_load_dataset_finds_bags_of_a_moved_output_folder(recorded, robot, tmp_path):
    """`vla-graph --output-dir artifacts/data` records bag paths relative to the working
    directory; the bags are found under <root>/bags/ wherever the folder is now."""
    out, _, _, _ = recorded
    moved = tmp_path / "moved"
    shutil.copytree(out / "bags", moved / "bags")
    report = json.loads((out / "report.json").read_text())
    report["episodes"][0]["bag"] = "no/such/output/bags/button-press_s3"
    (moved / "report.json").write_text(json.dumps(report))
    ep, = load_dataset(moved, robot, successful_only=False)
    assert ep.bag == str(moved / "bags" / "button-press_s3") and len(ep.actions) >= 20
    shutil.rmtree(moved / "bags")
    with pytest.raises(DatasetError, match="button-press_s3"):
        load_dataset(moved, robot, successful_only=False)


@pytest.mark.slow      # reads an episode recorded through the full graph
def test_chunk_samples_pads_masks_and_clips(episode):
    ep = episode
    T = len(ep.actions)
    rng = np.random.default_rng(0)
    short = Episode(task="toy", seed=0, instruction="do the toy thing", success=True,
                    frames={"corner": rng.integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)},
                    states=rng.normal(size=(3, 4)).astype(np.float32),
                    actions=rng.normal(size=(3, 4)).astype(np.float32),
                    stamps=np.arange(3) * DT, bag="toy")
    H, offsets = 8, [1, 5, -2]
    s = chunk_samples([ep, short, ep], H, offsets)
    N = 2 * T + 3
    assert s["actions"].shape == (N, H, 4) and s["actions"].dtype == np.float32
    assert s["action_mask"].shape == (N, H) and s["state"].shape == (N, 4)
    assert s["frame_index"].shape == (N,) and s["future_index"].shape == (N, 3)
    assert s["episode"].tolist() == [0] * T + [1] * 3 + [2] * T
    assert s["frames"]["corner"].shape == (N, 128, 128, 3) and s["frames"]["corner"].dtype == np.uint8
    assert s["instructions"] == [ep.instruction, "do the toy thing"]
    assert s["instruction_id"].tolist() == [0] * T + [1] * 3 + [0] * T

    frames = s["frames"]["corner"]
    np.testing.assert_array_equal(frames[s["frame_index"][:T]], ep.frames["corner"])
    np.testing.assert_array_equal(frames[s["frame_index"][T:T + 3]], short.frames["corner"])
    np.testing.assert_array_equal(s["state"][T:T + 3], short.states)
    # start of an episode: a full chunk, future frames k+1 and k+5, k-2 clipped to the first frame
    np.testing.assert_array_equal(s["actions"][0], ep.actions[:H])
    assert s["action_mask"][0].tolist() == [1] * H
    assert s["future_index"][0].tolist() == [1, 5, 0]
    # the short episode (global rows T..T+2): chunks padded with its own last action
    k0 = T
    np.testing.assert_array_equal(s["actions"][k0, :3], short.actions)
    np.testing.assert_array_equal(s["actions"][k0, 3:], np.repeat(short.actions[-1:], H - 3, axis=0))
    assert s["action_mask"][k0].tolist() == [1, 1, 1] + [0] * (H - 3)
    assert s["action_mask"][k0 + 2].tolist() == [1] + [0] * (H - 1)
    assert s["future_index"][k0 + 1].tolist() == [T + 2, T + 2, T]     # clipped inside its episode
    # end of the last episode: padding, mask and clipped future indices stay inside episode 2
    last = N - 1
    np.testing.assert_array_equal(s["actions"][last], np.repeat(ep.actions[-1:], H, axis=0))
    assert s["action_mask"][last].tolist() == [1] + [0] * (H - 1)
    assert s["future_index"][last].tolist() == [N - 1, N - 1, N - 3]
    k = T + 3 + (T - 3)                                              # 3 steps before the end
    np.testing.assert_array_equal(s["actions"][k, :3], ep.actions[-3:])
    np.testing.assert_array_equal(s["actions"][k, 3:], np.repeat(ep.actions[-1:], H - 3, axis=0))
    assert s["action_mask"][k].tolist() == [1, 1, 1] + [0] * (H - 3)
    np.testing.assert_array_equal(frames[s["future_index"][k, 0]], ep.frames["corner"][-2])
    # every real entry of every chunk is the episode's action at k + j
    mask = s["action_mask"].astype(bool)
    first = np.concatenate([ep.actions, short.actions, ep.actions])
    np.testing.assert_array_equal(s["actions"][:, 0], first)
    assert mask.sum() == sum(min(H, n - k) for n in (T, 3, T) for k in range(n))


# ---- bags from other writers -----------------------------------------------------------------
def _write_foreign_bag(path, ts):
    """A recording by some other tool: the robot's streams under other names, 64x64 bgr8 images,
    a re-published state, a re-sent command, a state 2 ms off its image and one command that
    answers nothing recorded."""
    T = ts.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]

    def header(t):
        return Header(stamp=Time(sec=int(t // 10**9), nanosec=int(t % 10**9)), frame_id="world")

    rng = np.random.default_rng(1)
    stamps = [1_000_000_000 + i * 12_500_000 for i in range(4)]
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in stamps]
    actions = [[0.1 * i, -0.2, 0.3, -1.0] for i in range(len(stamps))]
    msgs = []
    for i, t in enumerate(stamps):
        img = T["sensor_msgs/msg/Image"](header=header(t), height=64, width=64, encoding="bgr8",
                                         is_bigendian=0, step=192, data=images[i].reshape(-1).copy())
        msgs.append(("/cam/front", "sensor_msgs/msg/Image", t, img))
        jt = t + (2_000_000 if i == 2 else 0)                  # within sync.tolerance_s (5 ms)
        js = T["sensor_msgs/msg/JointState"](header=header(jt), name=["l_close", "r_close"],
                                             position=np.array([-0.01, 0.01 * i]), velocity=np.zeros(0),
                                             effort=np.zeros(0))
        msgs.append(("/arm/joints", "sensor_msgs/msg/JointState", t, js))
        pose = T["geometry_msgs/msg/PoseStamped"](
            header=header(t), pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=0.1 * i, y=0.6, z=0.2),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
        msgs.append(("/arm/pose", "geometry_msgs/msg/PoseStamped", t, pose))
        if i == 1:                                              # the same state published again
            dup = T["sensor_msgs/msg/Image"](header=header(t), height=64, width=64, encoding="bgr8",
                                             is_bigendian=0, step=192, data=np.zeros(64 * 64 * 3, np.uint8))
            msgs.append(("/cam/front", "sensor_msgs/msg/Image", t + 1, dup))
        cmd = T["vla_msgs/msg/ActionCommand"](header=header(t), action_space="ee_delta",
                                              names=["dx", "dy", "dz", "gripper"], values=np.array(actions[i]))
        msgs.append(("/arm/cmd", "vla_msgs/msg/ActionCommand", t + 5, cmd))
        if i == 2:                                              # re-sent (later values must not win)
            again = T["vla_msgs/msg/ActionCommand"](header=header(t), action_space="ee_delta",
                                                    names=[], values=np.array([9.0, 9.0, 9.0, 9.0]))
            msgs.append(("/arm/cmd", "vla_msgs/msg/ActionCommand", t + 6, again))
    orphan = T["vla_msgs/msg/ActionCommand"](header=header(stamps[-1] + 12_500_000), action_space="ee_delta",
                                             names=[], values=np.array([0.5, 0.5, 0.5, 1.0]))
    msgs.append(("/arm/cmd", "vla_msgs/msg/ActionCommand", stamps[-1] + 12_500_005, orphan))
    msgs.insert(0, ("/arm/done", "std_msgs/msg/Bool", stamps[0] - 1, T["std_msgs/msg/Bool"](data=False)))
    msgs.append(("/arm/done", "std_msgs/msg/Bool", stamps[-1] + 20, T["std_msgs/msg/Bool"](data=True)))

    writer = Writer(path, version=9)
    writer.open()
    conns = {}
    for topic, msgtype, t, msg in msgs:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
        writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
    writer.close()
    return stamps, images, actions


FOREIGN_MAP = {CAM: "/cam/front", "/joint_states": "/arm/joints", "/vla/sim/ee_pose": "/arm/pose",
               CMD: "/arm/cmd", "/vla/sim/success": "/arm/done"}


def test_bag_from_another_writer_loads_through_topic_map(tmp_path, robot):
    bag = tmp_path / "stack-blocks_s12"
    stamps, images, actions = _write_foreign_bag(bag, make_typestore())
    ep = load_episode(bag, robot, topic_map=FOREIGN_MAP)
    assert (ep.task, ep.seed, ep.success, ep.instruction) == ("stack-blocks", 12, True, "")   # last success
    assert ep.skipped == 1                                      # the command answering no recorded state
    np.testing.assert_allclose(ep.stamps, np.array(stamps) * 1e-9)
    np.testing.assert_array_equal(ep.actions, np.array(actions, np.float32))
    np.testing.assert_allclose(ep.states, [[0.1 * i, 0.6, 0.2, 0.01 * i] for i in range(4)], rtol=1e-6)
    assert ep.frames["corner"].shape == (4, 128, 128, 3)
    for i, img in enumerate(images):                             # bgr8 -> rgb, upsampled to 128x128
        expected = load_robot_input(img[:, :, ::-1])
        np.testing.assert_array_equal(ep.frames["corner"][i], expected)
    assert ep.frames["corner"][1].any()                          # the first copy, not the re-published blank
    # the same bag without the map names every topic it cannot find
    with pytest.raises(DatasetError) as err:
        load_episode(bag, robot)
    for topic in (CAM, CMD, "/joint_states", "/vla/sim/ee_pose"):
        assert topic in str(err.value)
    assert str(bag) in str(err.value)
    # load_dataset passes the map on and reads success from the bag
    eps = load_dataset([bag], robot, topic_map=FOREIGN_MAP)
    assert len(eps) == 1 and len(eps[0].actions) == 4


def load_robot_input(img):
    import cv2
    return cv2.resize(np.ascontiguousarray(img), (128, 128), interpolation=cv2.INTER_LINEAR)


@pytest.mark.slow      # reads an episode recorded through the full graph
def test_missing_topics_and_folders_are_named(tmp_path, robot, recorded):
    _, bag, _, _ = recorded
    with pytest.raises(DatasetError, match="/vla/other/camera"):
        load_episode(bag, robot, topic_map={CAM: "/vla/other/camera"})
    with pytest.raises(DatasetError) as err:
        load_episode(bag, robot, topic_map={CMD: "/nowhere/command"})
    assert "/nowhere/command" in str(err.value) and str(bag) in str(err.value)
    assert CAM not in str(err.value).split("; bag has")[0]       # only the missing one is named
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(DatasetError, match="no_such_bag"):
        load_episode(tmp_path / "no_such_bag", robot)
    only_images = tmp_path / "images_only"
    ts = make_typestore()
    writer = Writer(only_images, version=9)
    writer.open()
    conn = writer.add_connection(CAM, "sensor_msgs/msg/Image", typestore=ts)
    T = ts.types
    img = T["sensor_msgs/msg/Image"](header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                                    frame_id=""),
                                     height=1, width=1, encoding="rgb8", is_bigendian=0, step=3,
                                     data=np.zeros(3, np.uint8))
    writer.write(conn, 0, ts.serialize_cdr(img, "sensor_msgs/msg/Image"))
    writer.close()
    with pytest.raises(DatasetError) as err:
        load_episode(only_images, robot)
    assert CMD in str(err.value) and "images_only" in str(err.value)


# ---- action-free episodes (videos with proprio) ------------------------------------------------
def test_action_free_episode_never_reads_an_action_or_command_topic(tmp_path, robot, monkeypatch):
    """An action-free read of a bag that has commands: rows are the camera's frames, the actions are
    zeros flagged action_free, and rosbags is never asked for a message of the command topic (nor of
    any other topic outside cameras, proprio, instruction and success)."""
    bag = tmp_path / "stack-blocks_s12"
    stamps, images, _ = _write_foreign_bag(bag, make_typestore())
    asked: list[str] = []
    messages = Reader.messages

    def spying_messages(self, connections=(), *args, **kwargs):
        asked.extend(c.topic for c in connections)
        return messages(self, connections, *args, **kwargs)

    monkeypatch.setattr(Reader, "messages", spying_messages)
    ep = load_episode(bag, robot, topic_map=FOREIGN_MAP, action_free=True)
    assert asked and "/arm/cmd" not in asked
    assert set(asked) <= {"/cam/front", "/arm/joints", "/arm/pose", "/arm/done"}
    assert ep.action_free and (ep.task, ep.seed, ep.success) == ("stack-blocks", 12, True)
    np.testing.assert_allclose(ep.stamps, np.array(stamps) * 1e-9)        # one row per frame
    np.testing.assert_array_equal(ep.actions, np.zeros((4, 4), np.float32))
    np.testing.assert_allclose(ep.states, [[0.1 * i, 0.6, 0.2, 0.01 * i] for i in range(4)], rtol=1e-6)
    for i, img in enumerate(images):
        np.testing.assert_array_equal(ep.frames["corner"][i], load_robot_input(img[:, :, ::-1]))
    # the labelled read of the same bag does ask for the commands: the spy sees what is read
    asked.clear()
    assert not load_episode(bag, robot, topic_map=FOREIGN_MAP).action_free and "/arm/cmd" in asked


def test_action_free_bag_without_commands_loads_and_its_samples_never_train_actions(tmp_path, robot):
    """A bag recorded with no command topic at all (as `make data-video` records) reads as an action-free
    episode; labelled reading names the missing command topic; in chunk_samples its action mask is 0."""
    bag = tmp_path / "button-press_s20"
    _write_foreign_bag(bag, make_typestore())
    video_only = tmp_path / "video_only" / "button-press_s21"
    video_only.parent.mkdir()
    with Reader(bag) as reader:
        keep = [c for c in reader.connections if c.topic != "/arm/cmd"]
        rows = [(c.topic, c.msgtype, t, raw) for c, t, raw in reader.messages(connections=keep)]
    writer = Writer(video_only, version=9)
    writer.open()
    conns = {}
    for topic, msgtype, t, raw in rows:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=make_typestore())
        writer.write(conns[topic], t, raw)
    writer.close()
    with pytest.raises(DatasetError, match="/arm/cmd"):
        load_episode(video_only, robot, topic_map=FOREIGN_MAP)
    [video] = load_dataset([video_only], robot, topic_map=FOREIGN_MAP, action_free=True)
    demo = load_episode(bag, robot, topic_map=FOREIGN_MAP)
    assert video.action_free and video.seed == 21 and len(video) == 4
    s = chunk_samples([demo, video], 3, [1])
    assert s["action_mask"][:4].sum() == 3 + 3 + 2 + 1 and s["action_mask"][4:].sum() == 0
    np.testing.assert_array_equal(s["future_index"][4:, 0], [5, 6, 7, 7])   # its frames still train video
    # seeds keep only the K demonstrations asked for
    assert [e.seed for e in load_dataset([bag, video_only], robot, topic_map=FOREIGN_MAP, action_free=True,
                                         seeds={21})] == [21]
