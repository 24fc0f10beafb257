"""cyclegan.data.transforms: ranges, crops, flips and jitter checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.config import TransformConfig
from cyclegan.data.transforms import eval_transform, to_image, to_tensor, train_transform
from tests.data_factory import noise


def test_to_tensor_maps_bytes_to_minus_one_one() -> None:
    arr = np.array([[[0, 255, 51]]], np.uint8)
    t = to_tensor(Image.fromarray(arr))
    assert t.dtype == torch.float32 and t.shape == (3, 1, 1)
    assert t.flatten().tolist() == pytest.approx([-1.0, 1.0, 51 / 127.5 - 1.0])


def test_to_image_round_trips_and_clips() -> None:
    img = noise(3, (20, 12))
    assert np.array_equal(np.asarray(to_image(to_tensor(img))), np.asarray(img))
    assert np.asarray(to_image(torch.full((3, 2, 2), 5.0))).min() == 255
    with pytest.raises(ValueError, match=r"expected a 3xHxW tensor, got shape \(1, 3, 2, 2\)"):
        to_image(torch.zeros(1, 3, 2, 2))


def test_eval_transform_is_a_deterministic_resize() -> None:
    img = noise(1, (40, 30))
    out = eval_transform(32)(img)
    assert out.shape == (3, 32, 32) and out.min() >= -1 and out.max() <= 1
    expected = to_tensor(img.resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.allclose(out, expected, atol=2 / 255)  # torchvision vs Pillow bicubic rounding
    assert torch.equal(eval_transform(32)(img), out)
    assert torch.equal(eval_transform(40)(noise(1, (40, 40))), to_tensor(noise(1, (40, 40))))
    with pytest.raises(ValueError, match="eval_transform: size must be >= 1, got 0"):
        eval_transform(0)


def test_train_transform_crop_is_a_window_of_the_resized_image() -> None:
    img = noise(2, (50, 50))
    cfg = TransformConfig(load_size=40, crop_size=32, flip_prob=0.0)
    full = eval_transform(40)(img)
    windows = {(y, x): full[:, y : y + 32, x : x + 32] for y in range(9) for x in range(9)}
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = train_transform(cfg)(img)
        assert out.shape == (3, 32, 32)
        match = [k for k, w in windows.items() if torch.equal(w, out)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 1  # the crop position is random


def test_flip_probability_one_and_zero() -> None:
    img = noise(4, (32, 32))
    plain = to_tensor(img)
    never = train_transform(TransformConfig(load_size=32, crop_size=32, flip_prob=0.0))
    always = train_transform(TransformConfig(load_size=32, crop_size=32, flip_prob=1.0))
    assert torch.equal(never(img), plain)
    assert torch.equal(always(img), plain.flip(-1))


def test_seeded_randomness_is_reproducible_and_jitter_changes_colours() -> None:
    img = noise(5, (40, 40))
    cfg = TransformConfig(load_size=40, crop_size=32, flip_prob=0.5, color_jitter=0.5)
    torch.manual_seed(7)
    a = train_transform(cfg)(img)
    torch.manual_seed(7)
    b = train_transform(cfg)(img)
    assert torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    no_jitter = TransformConfig(load_size=40, crop_size=32, flip_prob=0.5, color_jitter=0.0)
    torch.manual_seed(7)
    c = train_transform(no_jitter)(img)
    assert not torch.allclose(a, c, atol=0.05)
