import numpy as np
import pytest

from vla_policy_node.core.images import ImageEncodingError, decode, resize_rgb, to_model_input


def test_rgb_bgr_mono_decode_to_rgb():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(decode("rgb8", 2, 3, 9, rgb.tobytes()), rgb)
    np.testing.assert_array_equal(decode("bgr8", 2, 3, 9, rgb[:, :, ::-1].tobytes()), rgb)
    mono = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    out = decode("mono8", 2, 3, 3, mono.tobytes())
    assert out.shape == (2, 3, 3) and (out[..., 0] == mono).all() and (out[..., 2] == mono).all()


def test_row_padding_respected():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    padded = np.zeros((2, 8), np.uint8)
    padded[:, :6] = rgb.reshape(2, 6)
    np.testing.assert_array_equal(decode("rgb8", 2, 2, 8, padded.tobytes()), rgb)


def test_unsupported_encoding_names_it():
    with pytest.raises(ImageEncodingError, match=r"/cam: encoding '16UC1' not supported"):
        decode("16UC1", 2, 2, 4, bytes(8), where="/cam")


def test_short_buffer_rejected():
    with pytest.raises(ImageEncodingError, match="too small"):
        decode("rgb8", 4, 4, 12, bytes(10))


def test_crop_then_resize():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 200                     # the centre square is bright
    out = to_model_input(img, (224, 224), crop=(0, 80, 480, 480))
    assert out.shape == (224, 224, 3) and out.min() == 200
    with pytest.raises(ImageEncodingError, match="exceeds"):
        to_model_input(img, (224, 224), crop=(0, 300, 480, 480))


def test_resize_one_frame_or_a_stack():
    """Shrinking averages pixel areas (a 2x2 checkerboard becomes its mean grey); a stack resizes frame by frame."""
    board = np.indices((64, 64)).sum(axis=0) % 2 * 200
    frame = np.repeat(board[:, :, None], 3, axis=2).astype(np.uint8)
    small = resize_rgb(frame, (32, 32))
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8 and (small == 100).all()
    stack = resize_rgb(np.stack([frame, frame // 2]), (16, 24))
    assert stack.shape == (2, 16, 24, 3) and (stack[0] == 100).all() and (stack[1] == 50).all()
    assert resize_rgb(small, (64, 48)).shape == (64, 48, 3)
    np.testing.assert_array_equal(resize_rgb(frame, (64, 64)), frame)
