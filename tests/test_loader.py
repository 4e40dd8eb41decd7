"""recipe_kit.loader: reproducible batches, augmentations equal to slow obvious versions, labels untouched."""
import pytest
import torch
import torch.nn.functional as F

import recipe_kit as rk
from recipe_kit import loader as L


def toy(n=50, c=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_same_seed_same_batches_different_seed_different():
    X, y = toy()
    aug = rk.Augment(crop_padding=2, flip=True, erase_p=0.5)
    a = batches(rk.BatchLoader(X, y, batch_size=16, seed=3, augment=aug))
    b = batches(rk.BatchLoader(X, y, batch_size=16, seed=3, augment=aug))
    c = batches(rk.BatchLoader(X, y, batch_size=16, seed=4, augment=aug))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_each_epoch_reshuffles_but_reruns_reproduce_every_epoch():
    X, y = toy()
    run1, run2 = rk.BatchLoader(X, y, 10, seed=0), rk.BatchLoader(X, y, 10, seed=0)
    e1, e2 = batches(run1), batches(run1)
    assert not torch.equal(torch.cat([b for _, b in e1]), torch.cat([b for _, b in e2]))
    assert torch.equal(torch.cat([b for _, b in batches(run2)]), torch.cat([b for _, b in e1]))
    assert torch.equal(torch.cat([b for _, b in batches(run2)]), torch.cat([b for _, b in e2]))


def test_every_sample_once_per_epoch_and_len():
    X, y = toy(n=50)
    for drop_last, expected_len, expected_n in ((False, 4, 50), (True, 3, 48)):
        loader = rk.BatchLoader(X, y, batch_size=16, seed=0, drop_last=drop_last)
        seen = torch.cat([b for _, b in loader])
        assert len(loader) == expected_len and len(seen) == expected_n
    unshuffled = rk.BatchLoader(X, y, batch_size=16, shuffle=False)
    assert torch.equal(torch.cat([b for _, b in unshuffled]), y)
    assert torch.equal(torch.sort(torch.cat([b for _, b in rk.BatchLoader(X, y, 16)])).values,
                       torch.sort(y).values)


def test_augmentation_never_touches_labels():
    # Image i is constant with value 5*label: whatever crop/flip/erase does, its centre pixel still
    # tells which label it must travel with (padding 2 never moves the centre out of an 8x8 image;
    # erasing is off here because it could land on the centre).
    y = torch.arange(40) % 10
    X = (5 * y).to(torch.uint8)[:, None, None, None].expand(40, 1, 8, 8).contiguous()
    loader = rk.BatchLoader(X, y, 8, seed=1, augment=rk.Augment(crop_padding=2, flip=True))
    for x, yb in loader:
        assert torch.equal(torch.round(x[:, 0, 4, 4] * 255 / 5).long(), yb)


def test_random_crop_matches_slow_reference():
    x = torch.rand(6, 3, 7, 9)
    fast = L.random_crop(x, 3, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 7, (6,), generator=g), torch.randint(0, 7, (6,), generator=g)
    padded = F.pad(x, (3, 3, 3, 3))
    slow = torch.stack([padded[i, :, dy[i]:dy[i] + 7, dx[i]:dx[i] + 9] for i in range(6)])
    assert torch.equal(fast, slow)


def test_random_flip_matches_slow_reference():
    x = torch.rand(32, 2, 5, 5)
    fast = L.random_flip(x, torch.Generator().manual_seed(7))
    flip = torch.rand(32, generator=torch.Generator().manual_seed(7)) < 0.5
    slow = torch.stack([x[i].flip(-1) if flip[i] else x[i] for i in range(32)])
    assert torch.equal(fast, slow) and 0 < flip.sum() < 32


def test_random_erase_rectangles():
    x = torch.ones(200, 1, 28, 28)
    none = L.random_erase(x, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(none, x)
    out = L.random_erase(x, torch.Generator().manual_seed(0), p=1.0, scale=(0.02, 0.33))
    erased = out[:, 0] == 0
    area = erased.float().mean(dim=(1, 2))
    assert (area > 0).all() and (area < 0.45).all()  # 0.33 of the area, up to rounding of h and w
    for mask in erased[:20]:  # each erased region is one axis-aligned rectangle
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert mask.sum() == len(rows) * len(cols)


def test_normalization_with_channel_stats_standardizes():
    X, y = toy(n=400, c=3)
    mean, std = L.channel_stats(X)
    x = torch.cat([b for b, _ in rk.BatchLoader(X, y, 100, mean=mean, std=std)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_bad_input_says_what_to_do():
    X, y = toy()
    with pytest.raises(ValueError, match="images has 50 items but labels has 49"):
        rk.BatchLoader(X, y[:-1])
    with pytest.raises(ValueError, match="must be uint8"):
        rk.BatchLoader(X.float(), y)
    with pytest.raises(ValueError, match="empty"):
        rk.BatchLoader(X[:0], y[:0])
    with pytest.raises(ValueError, match="both mean and std"):
        rk.BatchLoader(X, y, mean=(0.5,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_batches_on_gpu_as_on_cpu():
    X, y = toy()
    aug = rk.Augment(crop_padding=2, flip=True, erase_p=0.5)
    cpu = batches(rk.BatchLoader(X, y, 16, seed=0, augment=aug))
    gpu = batches(rk.BatchLoader(X, y, 16, seed=0, augment=aug, device="cuda"))
    assert all(torch.allclose(a.cpu(), b) for (a, _), (b, _) in zip(gpu, cpu))


def test_seed_everything_and_pick_device():
    rk.seed_everything(5)
    a = torch.rand(3)
    rk.seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    assert rk.pick_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        assert rk.pick_device().type == "cuda"
    elif torch.backends.mps.is_available():
        assert rk.pick_device().type == "mps"
    else:
        assert rk.pick_device().type == "cpu"
