"""recipe_kit.data: decoding of the real formats, verification, atomic cache, and every failure path.

MNIST and CIFAR-10 are tested on small files in their real formats, written here; Fashion-MNIST on the
real thing (installed by ./course setup from Debian's dataset-fashion-mnist).
"""
import dataclasses
import gzip
import os
import pickle
import shutil
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import recipe_kit as rk
from recipe_kit import data


# ----------------------------------------------------------------------------- writers of real formats

def write_idx(path, array):
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims), gzip'd if *.gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(raw)


def tiny_mnist(folder, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        image_stem, label_stem = data.IDX_FILES[split]
        ext = ".gz" if gz else ""
        write_idx(folder / (image_stem + ext), images)
        write_idx(folder / (label_stem + ext), labels)
        out[split] = (images, labels)
    return out


def tiny_cifar(folder, per_batch=4, seed=0):
    """cifar-10-batches-py with 5 train batches and a test batch, pickled dicts as upstream."""
    rng = np.random.default_rng(seed)
    folder = folder / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train": [], "test": []}
    for name in data.CIFAR_FILES["train"] + data.CIFAR_FILES["test"]:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": rows, b"labels": labels,
                         b"filenames": [b"x.png"] * per_batch}, f)
        out["test" if name == "test_batch" else "train"].append((rows, labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in data.SPECS["cifar10"].classes]}, f)
    return out


def pin(monkeypatch, name, split_arrays):
    """Register the tiny files' facts as the pinned spec, as if they were the official dataset."""
    spec = data.SPECS[name]
    counts, label_counts, sha = {}, {}, {}
    for split, (images, labels) in split_arrays.items():
        if images.ndim == 3:  # IDX holds (N, H, W); loaded images are (N, 1, H, W)
            images = images[:, None]
        counts[split] = len(labels)
        label_counts[split] = tuple(np.bincount(labels, minlength=10).tolist())
        sha[split] = data.content_sha256(images, labels)
    monkeypatch.setitem(data.SPECS, name, dataclasses.replace(
        spec, counts=counts, label_counts=label_counts, sha256=sha))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Debian package and no internet: only what the test writes can be loaded."""
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")

    def no_network(spec, raw_dir):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(data, "_download", no_network)


# ----------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("gz", [True, False])
def test_idx_decoding_matches_what_was_written(tmp_path, gz):
    written = tiny_mnist(tmp_path, gz=gz)
    train = rk.load_dataset(tmp_path, "train")  # a folder of the learner's own
    images, labels = written["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (30, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images))
    assert torch.equal(train.labels, torch.from_numpy(labels.astype(np.int64)))
    assert train.classes == tuple(str(c) for c in range(10))


def test_cifar_decoding_keeps_channel_planes(tmp_path):
    written = tiny_cifar(tmp_path)
    test = rk.load_dataset(tmp_path, "test")
    rows, labels = written["test"][0]
    assert test.images.shape == (4, 3, 32, 32)
    # A CIFAR row is the 1024 red values, then green, then blue, each row-major over 32x32.
    assert test.images[1, 0, 0, 5] == rows[1, 5]
    assert test.images[1, 1, 2, 0] == rows[1, 1024 + 64]
    assert test.images[1, 2, 31, 31] == rows[1, 3071]
    assert test.labels.tolist() == labels
    train = rk.load_dataset(tmp_path, "train")
    assert len(train) == 5 * 4  # all five training batches, in order
    assert torch.equal(train.images[-4:].reshape(4, -1), torch.from_numpy(written["train"][-1][0]))


def test_mnist_by_name_verifies_caches_and_then_loads_from_cache(tmp_path, monkeypatch, offline):
    written = tiny_mnist(tmp_path / "mnist" / "raw")
    pin(monkeypatch, "mnist", written)
    first = rk.load_dataset("mnist", "train", root=tmp_path)
    assert (tmp_path / "mnist" / "train.npz").exists()
    shutil.rmtree(tmp_path / "mnist" / "raw")  # the cache alone must now be enough
    second = rk.load_dataset("mnist", "train", root=tmp_path)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == data.SPECS["mnist"].classes


def test_cifar10_by_name(tmp_path, monkeypatch, offline):
    written = tiny_cifar(tmp_path / "cifar10" / "raw")
    arrays = {s: (np.concatenate([r for r, _ in b]).reshape(-1, 3, 32, 32),
                  np.concatenate([np.array(l) for _, l in b])) for s, b in written.items()}
    pin(monkeypatch, "cifar10", arrays)
    X, y, classes = rk.load_dataset("cifar10", "train", root=tmp_path)
    assert X.shape == (20, 3, 32, 32) and classes[0] == "airplane"


# ----------------------------------------------------------------------------- failure paths

def test_truncated_idx_is_reported_not_used(tmp_path):
    tiny_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="truncated"):
        rk.load_dataset(tmp_path, "train")


def test_truncated_gzip_is_reported_not_used(tmp_path):
    tiny_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(data.DataError, match="corrupted or truncated"):
        rk.load_dataset(tmp_path, "train")


def test_corrupted_cifar_batch_is_reported(tmp_path):
    tiny_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(data.DataError, match="test_batch: corrupted or truncated"):
        rk.load_dataset(tmp_path, "test")


def test_content_not_matching_pinned_checksum_fails_with_fix(tmp_path, monkeypatch, offline):
    written = tiny_mnist(tmp_path / "mnist" / "raw", gz=False)
    pin(monkeypatch, "mnist", written)
    path = tmp_path / "mnist" / "raw" / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # one pixel differs: same size, same labels, different content
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError) as e:
        rk.load_dataset("mnist", "train", root=tmp_path)
    message = str(e.value)
    assert "checksum differs" in message and "network is unreachable" in message
    assert "python -m recipe_kit fetch mnist" in message
    assert not (tmp_path / "mnist" / "train.npz").exists()


def test_offline_with_no_source_lists_everything_tried(tmp_path, offline):
    with pytest.raises(data.DataError) as e:
        rk.load_dataset("fashion-mnist", "test", root=tmp_path)
    message = str(e.value)
    for tried in ("cache", "raw files", "Debian package dataset-fashion-mnist", "torchvision download"):
        assert tried in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "python -m recipe_kit fetch fashion-mnist" in message


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_cache_is_reported_and_rebuilt(tmp_path, monkeypatch, offline, damage):
    written = tiny_mnist(tmp_path / "mnist" / "raw")
    pin(monkeypatch, "mnist", written)
    good = rk.load_dataset("mnist", "test", root=tmp_path)
    cache = tmp_path / "mnist" / "test.npz"
    raw = bytearray(cache.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:  # npz is an uncompressed zip: flip a pixel byte inside the images array
        offset = raw.index(bytes(written["test"][0][3, 10]))
        raw[offset] ^= 0x01
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="cache"):
        again = rk.load_dataset("mnist", "test", root=tmp_path)
    assert torch.equal(again.images, good.images)
    data.read_cache(cache)  # rebuilt: loads cleanly again


def test_interrupted_cache_write_leaves_nothing_that_loads(tmp_path, monkeypatch, offline):
    written = tiny_mnist(tmp_path / "mnist" / "raw")
    pin(monkeypatch, "mnist", written)
    real_savez = np.savez

    def savez_then_ctrl_c(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)   # half the bytes are on disk...
        raise KeyboardInterrupt      # ...when the learner presses Ctrl-C
    monkeypatch.setattr(np, "savez", savez_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        rk.load_dataset("mnist", "train", root=tmp_path)
    assert list((tmp_path / "mnist").glob("train.npz*")) == []  # no cache, no leftover partial file
    monkeypatch.setattr(np, "savez", real_savez)
    assert len(rk.load_dataset("mnist", "train", root=tmp_path)) == 30


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="use 'train' or 'test'"):
        rk.load_dataset("fashion-mnist", "valid")
    with pytest.raises(data.DataError, match="unknown dataset 'fashoin-mnist'"):
        rk.load_dataset("fashoin-mnist")
    with pytest.raises(data.DataError, match="neither IDX files"):
        rk.load_dataset(tmp_path)


def test_command_line_fetch(capsys, tmp_path, monkeypatch, offline):
    from recipe_kit.__main__ import main
    assert main(["fetch", "nope"]) == 2
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    assert main(["fetch", "fashion-mnist"]) == 1
    assert "could not load fashion-mnist/train" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real data

def test_real_fashion_mnist_loads_and_matches_pinned_content():
    train, test = rk.load_dataset("fashion-mnist", "train"), rk.load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    # Published statistics of the training set (zalandoresearch/fashion-mnist): mean 0.2860, std 0.3530.
    mean, std = rk.loader.channel_stats(train.images)
    assert mean[0] == pytest.approx(0.2860, abs=1e-4) and std[0] == pytest.approx(0.3530, abs=1e-4)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian/Ubuntu system: no Debian package source")
def test_debian_package_is_a_source(tmp_path, monkeypatch):
    assert (data.DEBIAN_DIR / "fashion-mnist").is_dir(), \
        "dataset-fashion-mnist is not installed: ./course setup installs it (as root or with sudo)"
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("must not download"))
    test = rk.load_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(test) == 10000 and (tmp_path / "fashion-mnist" / "test.npz").exists()


def test_train_val_split_is_a_seeded_partition():
    data_ = rk.Images(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1), torch.arange(20) % 3, ("a", "b", "c"))
    train, val = rk.train_val_split(data_, val_size=5, seed=1)
    assert len(train) == 15 and len(val) == 5 and val.classes == ("a", "b", "c")
    ids = torch.cat([train.images.flatten(), val.images.flatten()]).long()
    assert sorted(ids.tolist()) == list(range(20))                       # a partition: nothing lost or shared
    assert torch.equal(train.labels, ids[:15] % 3)                          # labels travel with their images
    again, _ = rk.train_val_split(data_, val_size=5, seed=1)
    assert torch.equal(again.images, train.images)
    with pytest.raises(ValueError, match="val_size=20"):
        rk.train_val_split(data_, val_size=20)


# ----------------------------------------------------------------------------- data folders others share

def test_unwritable_data_folder_loads_from_the_verified_source_without_caching(tmp_path, monkeypatch, offline):
    """Read-only folder, two ways: a real chmod 555 (only when not root: root writes anyway, as in CI's
    container), and, for every user, mkstemp raising the PermissionError the kernel gives non-root users."""
    written = tiny_mnist(tmp_path / "mnist" / "raw")
    pin(monkeypatch, "mnist", written)
    (tmp_path / "mnist").chmod(0o555)
    try:
        if os.geteuid() != 0:
            with pytest.warns(UserWarning, match=r"verified from raw files .* but not cached: cannot write"):
                assert len(rk.load_dataset("mnist", "train", root=tmp_path)) == 30

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(data.tempfile, "mkstemp", denied)
        with pytest.warns(UserWarning, match=r"but not cached: cannot write .*train.npz \(Permission denied\)"):
            train = rk.load_dataset("mnist", "train", root=tmp_path)
    finally:
        (tmp_path / "mnist").chmod(0o755)
    assert torch.equal(train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert list((tmp_path / "mnist").glob("train.npz*")) == []


def test_caches_are_readable_by_the_group_and_stale_partials_are_cleaned(tmp_path, monkeypatch, offline):
    written = tiny_mnist(tmp_path / "mnist" / "raw")
    pin(monkeypatch, "mnist", written)
    stale, fresh = tmp_path / "mnist" / "test.npz.k1ll3d.partial", tmp_path / "mnist" / "test.npz.wr1t1ng.partial"
    for partial in (stale, fresh):
        partial.write_bytes(b"\0" * 1000)
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    old_umask = os.umask(0o002)                           # a shared group folder's usual umask
    try:
        rk.load_dataset("mnist", "test", root=tmp_path)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "mnist" / "test.npz").stat().st_mode & 0o777 == 0o664   # not mkstemp's 0600
    assert not stale.exists() and fresh.exists()          # a young one may be another process's write


def test_data_and_runs_folders_default_to_the_checkout_else_per_user(tmp_path, monkeypatch):
    monkeypatch.delenv("RECIPE_DATA_DIR", raising=False)
    monkeypatch.delenv("RECIPE_RUNS_DIR", raising=False)
    assert data.in_course_checkout()                                        # these tests run from the checkout
    assert data.default_dir("datasets", "RECIPE_DATA_DIR") == data.PROJECT_ROOT / "datasets"
    assert data.default_dir("runs", "RECIPE_RUNS_DIR") == data.PROJECT_ROOT / "runs"
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "site-packages")   # an installed copy
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert not data.in_course_checkout()
    assert data.default_dir("datasets", "RECIPE_DATA_DIR") == tmp_path / "cache" / "recipe-kit" / "datasets"
    assert data.default_dir("runs", "RECIPE_RUNS_DIR") == tmp_path / "share" / "recipe-kit" / "runs"
    monkeypatch.setenv("RECIPE_DATA_DIR", str(tmp_path / "mine"))
    assert data.default_dir("datasets", "RECIPE_DATA_DIR") == tmp_path / "mine"
