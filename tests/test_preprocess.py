import numpy as np
import pytest

from cxr.preprocess import prepare_image, to_model_input
from tests import factory


@pytest.mark.parametrize("policy", ["crop", "letterbox", "stretch"])
@pytest.mark.parametrize("shape", [(200, 160), (160, 200), (3000, 3000), (64, 64)])
def test_prepare_image_gives_the_requested_size(policy, shape):
    out = prepare_image(np.zeros(shape, np.uint8), 96, policy)
    assert out.shape == (96, 96) and out.dtype == np.uint8


def test_crop_takes_the_central_square():
    img = np.zeros((100, 300), np.uint8)
    img[:, 100:200] = 255  # the central square is white, the sides black
    out = prepare_image(img, 50, "crop")
    assert out.min() == 255


def test_letterbox_pads_with_black_and_keeps_everything():
    img = np.full((100, 300), 255, np.uint8)
    out = prepare_image(img, 60, "letterbox")
    assert out[0].max() == 0 and out[30].min() == 255  # bars top/bottom, content in the middle


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="resize policy"):
        prepare_image(factory.phantom(), 32, "squash")


def test_to_model_input_replicates_gray_into_three_float_channels():
    x = to_model_input(np.stack([factory.phantom(64, 64)] * 2))
    assert x.shape == (2, 64, 64, 3) and x.dtype == np.float32
    assert np.array_equal(x[..., 0], x[..., 2]) and x.max() == 255
