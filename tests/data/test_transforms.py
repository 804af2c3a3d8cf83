"""Transforms: exact numeric results and seeded randomness."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.data import transforms as T


def gen(seed):
    return dt.Generator().manual_seed(seed)


def test_to_tensor_hwc_uint8_to_chw_float():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14  # H=2, W=3, C=3
    out = T.ToTensor()(img)
    assert isinstance(out, dt.Tensor) and out.shape == (3, 2, 3) and out.dtype == dt.float32
    assert np.allclose(out.numpy(), img.transpose(2, 0, 1) / 255.0)
    assert out.numpy()[2, 1, 0] == np.float32(img[1, 0, 2]) / np.float32(255)
    gray = T.ToTensor()(np.full((4, 5), 255, dtype=np.uint8))
    assert gray.shape == (1, 4, 5) and gray.numpy().min() == 1.0
    floats = T.ToTensor()(np.full((2, 2, 1), 3.5, dtype=np.float64))
    assert floats.dtype == dt.float64 and floats.numpy().max() == 3.5  # not rescaled
    with pytest.raises(TypeError, match="pic should be an ndarray"):
        T.ToTensor()([[1]])
    with pytest.raises(ValueError, match="pic should be 2/3 dimensional"):
        T.ToTensor()(np.zeros(3, np.uint8))


def test_normalize():
    x = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)]).astype(np.float32)
    out = T.Normalize([0.5, 1.0], [0.5, 4.0])(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out[0].tolist() == [[1.0, 1.0]] * 2 and out[1].tolist() == [[0.5, 0.5]] * 2
    t = dt.tensor(x)
    assert np.array_equal(T.Normalize([0.5, 1.0], [0.5, 4.0])(t).numpy(), out)
    same = T.Normalize([0.5, 1.0], [0.5, 4.0], inplace=True)(t)
    assert same is t and np.array_equal(t.numpy(), out)
    batch = T.Normalize([1.0, 3.0], [1.0, 1.0])(np.stack([x, x]))
    assert batch.shape == (2, 2, 2, 2) and not batch.any()
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.Normalize([0, 0], [1, 0])(x)
    with pytest.raises(TypeError, match="Input tensor should be a float tensor"):
        T.Normalize([0], [1])(np.zeros((1, 2, 2), np.uint8))


def test_random_crop_offsets_come_from_the_generator():
    img = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    crop = T.RandomCrop((3, 4), generator=gen(0))(img)
    g = gen(0)
    i = dt.randint(0, 3, (1,), generator=g).item()
    j = dt.randint(0, 3, (1,), generator=g).item()
    assert np.array_equal(crop, img[:, i:i + 3, j:j + 4])
    assert np.array_equal(T.RandomCrop((5, 6))(img), img)
    seen = {T.RandomCrop(3, generator=gen(k))(img)[0, 0, 0] for k in range(30)}
    assert len(seen) > 3


def test_random_crop_padding_modes():
    img = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    full = T.RandomCrop(4, padding=1, fill=-1)(img)  # a 4x4 crop of the 4x4 padded image
    assert full[0].tolist() == [[-1, -1, -1, -1], [-1, 1, 2, -1], [-1, 3, 4, -1],
                                [-1, -1, -1, -1]]
    edge = T.RandomCrop((2, 4), padding=(1, 0), padding_mode="edge")(img)
    assert edge[0].tolist() == [[1, 1, 2, 2], [3, 3, 4, 4]]
    reflect = T.RandomCrop((2, 4), padding=(1, 0, 1, 0), padding_mode="reflect")(img)
    assert reflect[0].tolist() == [[2, 1, 2, 1], [4, 3, 4, 3]]
    grown = T.RandomCrop(3, pad_if_needed=True)(img)
    assert grown.shape == (1, 3, 3) and grown.sum() == 10
    t = T.RandomCrop(4, padding=1)(dt.tensor(img))
    assert isinstance(t, dt.Tensor) and t.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="larger than input image size"):
        T.RandomCrop(3)(img)
    with pytest.raises(ValueError, match="Padding mode should be either"):
        T.RandomCrop(3, padding_mode="wrap")


def test_random_horizontal_flip():
    img = np.arange(6.0).reshape(1, 2, 3)
    assert np.array_equal(T.RandomHorizontalFlip(p=1.0)(img), img[..., ::-1])
    assert T.RandomHorizontalFlip(p=0.0)(img) is img
    flips = [T.RandomHorizontalFlip(generator=gen(k))(img)[0, 0, 0] == 2.0 for k in range(200)]
    expected = [dt.rand(1, generator=gen(k), dtype=dt.float64).item() < 0.5 for k in range(200)]
    assert flips == expected and 80 < sum(flips) < 120


def test_compose_pipeline():
    img = np.full((4, 4, 3), 255, dtype=np.uint8)
    pipeline = T.Compose([T.ToTensor(), T.RandomCrop(2, padding=1), T.RandomHorizontalFlip(),
                          T.Normalize([0.5] * 3, [0.5] * 3)])
    out = pipeline(img)
    assert isinstance(out, dt.Tensor) and out.shape == (3, 2, 2)
    assert set(np.unique(out.numpy())) <= {-1.0, 1.0}
    assert "RandomCrop" in repr(pipeline)


def cifar_like(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_crop_and_flip_take_decoded_hwc_images():
    """uint8 arrays are (H, W, C): crops and flips move rows and columns, never channels."""
    img = cifar_like()
    g = gen(3)
    crop = T.RandomCrop(24, padding=4, fill=7, generator=gen(3))(img)
    i, j = (dt.randint(0, 17, (1,), generator=g).item() for _ in range(2))
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), constant_values=7)
    assert crop.dtype == np.uint8 and np.array_equal(crop, padded[i:i + 24, j:j + 24])
    assert np.array_equal(T.RandomHorizontalFlip(p=1.0)(img), img[:, ::-1])
    edge = T.RandomCrop((2, 4), padding=(1, 0), padding_mode="edge")(img[:2, :2])
    assert np.array_equal(edge, img[:2, [0, 0, 1, 1]])
    gray = img[..., 0]  # (H, W): the same in both layouts
    assert np.array_equal(T.RandomCrop(32, padding=2, generator=gen(1))(gray),
                          T.RandomCrop(32, padding=2, generator=gen(1))(img)[..., 0])
    with pytest.raises(ValueError, match=r"uint8 array is a decoded image.*\(2, 32, 32, 3\)"):
        T.RandomCrop(8)(np.stack([img, img]))
    with pytest.raises(ValueError, match=r"larger than input image size \(32, 3\)"):
        T.RandomCrop(32)(img.astype(np.float32))  # a float array is (..., C, H, W)


def test_augmentations_agree_on_hwc_arrays_and_chw_tensors():
    """The config's order (crop, flip, to_tensor) on a decoded image equals torchvision's
    tensor order (to_tensor, crop, flip) with the same random draws, and NumPy slicing."""
    img = cifar_like(1)
    norm = T.Normalize([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    flipped = set()
    for seed in range(8):
        hwc = T.Compose([T.RandomCrop(32, padding=4, generator=gen(seed)),
                         T.RandomHorizontalFlip(generator=gen(seed + 100)), T.ToTensor(), norm])
        chw = T.Compose([T.ToTensor(), T.RandomCrop(32, padding=4, generator=gen(seed)),
                         T.RandomHorizontalFlip(generator=gen(seed + 100)), norm])
        a, b = hwc(img), chw(img)
        assert isinstance(a, dt.Tensor) and a.shape == (3, 32, 32) and a.dtype == dt.float32
        assert isinstance(b, dt.Tensor) and np.array_equal(a.numpy(), b.numpy())
        g = gen(seed)
        i, j = (dt.randint(0, 9, (1,), generator=g).item() for _ in range(2))
        flip = dt.rand(1, generator=gen(seed + 100), dtype=dt.float64).item() < 0.5
        want = np.pad(img, ((4, 4), (4, 4), (0, 0)))[i:i + 32, j:j + 32]
        want = want[:, ::-1] if flip else want
        want = norm(want.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
        assert np.allclose(a.numpy(), want, atol=1e-6)
        flipped.add(flip)
    assert flipped == {True, False}
