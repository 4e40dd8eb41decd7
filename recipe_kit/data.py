"""Real image datasets as in-memory uint8 tensors, offline first, verified, cached atomically.

    train = load_dataset("fashion-mnist", "train")   # Images(images (N,1,28,28) uint8, labels (N,) int64, classes)

Why this file exists: a data pipeline that silently loads a truncated download, a half-written
cache or the wrong split caps accuracy without ever crashing. Here every load is checked against
pinned facts about the decoded content, and a failure says what was tried and how to fix it.

Sources, in order (the first that works wins, the ones that failed are reported):
  1. the cache  datasets/<name>/<split>.npz   (written by this module, atomically)
  2. raw files  datasets/<name>/raw/           (IDX files or cifar-10-batches-py, e.g. copied by hand)
  3. Debian's   /usr/share/datasets/<name>/    (apt-get install dataset-fashion-mnist)
  4. torchvision's download into datasets/<name>/raw/ (needs internet)

datasets/ is DATA_DIR: $RECIPE_DATA_DIR if set, else the course checkout's datasets/ when recipe_kit
runs from it, else a per-user cache folder (~/.cache/recipe-kit/datasets on Linux), so an installed
recipe_kit never writes next to site-packages. A folder you cannot write to (read-only, shared) still
works: the verified data are returned uncached, with a warning.
"""
import gzip
import hashlib
import os
import pickle
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the course checkout, if recipe_kit runs from one
STALE_PARTIAL_S = 3600  # a *.partial cache file this old was left by a killed process: delete it


def in_course_checkout():
    """True when recipe_kit is imported from the course repository (not from an installed copy)."""
    return (PROJECT_ROOT / "course").is_file() and (PROJECT_ROOT / "pyproject.toml").is_file()


def default_dir(kind, env_var):
    """Where recipe_kit keeps `kind` ("datasets", "runs"): $env_var, else the course checkout's
    folder, else a per-user folder (datasets: the user cache; runs: the user data folder)."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    if in_course_checkout():
        return PROJECT_ROOT / kind
    base = platformdirs.user_cache_dir if kind == "datasets" else platformdirs.user_data_dir
    return Path(base("recipe-kit")) / kind


DATA_DIR = default_dir("datasets", "RECIPE_DATA_DIR")
DEBIAN_DIR = Path("/usr/share/datasets")


class DataError(RuntimeError):
    """A dataset could not be loaded, or what was found is not what it claims to be."""


@dataclass(frozen=True)
class Images:
    """One split of an image-classification dataset, held in memory."""
    images: torch.Tensor  # (N, C, H, W) uint8, 0..255
    labels: torch.Tensor  # (N,) int64
    classes: tuple        # class names, index = label

    def __len__(self):
        return len(self.labels)

    def __iter__(self):  # so that `X, y, classes = train` reads naturally
        return iter((self.images, self.labels, self.classes))


@dataclass(frozen=True)
class Spec:
    """What we know about a public dataset before loading a single byte of it."""
    name: str
    format: str           # "idx" or "cifar"
    classes: tuple
    shape: tuple          # (C, H, W)
    counts: dict          # split -> number of images
    label_counts: dict    # split -> images per class, a cheap fingerprint of the labels
    sha256: dict          # split -> content_sha256 of the decoded tensors (None: not pinned yet)
    torchvision: str      # class name in torchvision.datasets, used for downloading
    apt_package: str = ""


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

SPECS = {
    "fashion-mnist": Spec(
        name="fashion-mnist", format="idx", shape=(1, 28, 28), torchvision="FashionMNIST",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        counts={"train": 60000, "test": 10000},
        label_counts={"train": (6000,) * 10, "test": (1000,) * 10},
        # Computed from the decoded IDX content (identical for upstream's and Debian's .gz files).
        sha256={"train": "a8007d7be041707b663947cf4c2d8a73d1704ccde85043273b866d5181bde6c2",
                "test": "3581bf52f521803120533f28e81ae934decd1771980630083c739dc6da7d3bc6"},
        apt_package="dataset-fashion-mnist"),
    "mnist": Spec(
        name="mnist", format="idx", shape=(1, 28, 28), torchvision="MNIST",
        classes=tuple(str(d) for d in range(10)),
        counts={"train": 60000, "test": 10000},
        label_counts={"train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                      "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)},
        # Not pinned yet: no copy of MNIST on the machine this was written on. torchvision checks the
        # archive's md5 on download; the count and label-histogram fingerprints above are checked here.
        sha256={"train": None, "test": None}),
    "cifar10": Spec(
        name="cifar10", format="cifar", shape=(3, 32, 32), torchvision="CIFAR10",
        classes=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
        counts={"train": 50000, "test": 10000},
        label_counts={"train": (5000,) * 10, "test": (1000,) * 10},
        sha256={"train": None, "test": None}),  # not pinned yet, see mnist
}


def content_sha256(images, labels):
    """Checksum of what a model sees (pixels and labels), independent of archive bytes."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- decoding

def _open_maybe_gz(path):
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path):
    """Decode one IDX file (MNIST's format, optionally gzip'd) into a uint8 numpy array."""
    try:
        with _open_maybe_gz(path) as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupted or truncated file ({e}).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'empty'}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or corrupted: header says {shape} = {expected} bytes, "
                        f"file holds {len(raw)}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder, stem):
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.exists():
            return candidate
    return None


def decode_idx_folder(folder, split):
    """images (N,1,H,W) uint8 and labels (N,) from a folder of MNIST-style IDX files."""
    folder = Path(folder)
    image_stem, label_stem = IDX_FILES[split]
    image_path, label_path = _find(folder, image_stem), _find(folder, label_stem)
    if image_path is None or label_path is None:
        raise FileNotFoundError(f"no {image_stem}[.gz] and {label_stem}[.gz] in {folder}")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {image_path.name} holds {images.shape}, {label_path.name} holds "
                        f"{labels.shape}; expected (N, H, W) images and N labels.")
    return images[:, None], labels.astype(np.int64)


CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def decode_cifar_folder(folder, split):
    """images (N,3,32,32) uint8 and labels (N,) from CIFAR-10's python batches (cifar-10-batches-py)."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    paths = [folder / name for name in CIFAR_FILES[split]]
    if not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no {', '.join(CIFAR_FILES[split])} in {folder}")
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # the official format is a python pickle
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
            raise DataError(f"{path}: corrupted or truncated CIFAR batch ({type(e).__name__}: {e}).") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise DataError(f"{path}: data {data.shape} / labels {batch_labels.shape}; "
                            "expected (N, 3072) and N labels.")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are stored channel-major: R plane, G, B
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def decode_folder(folder, split, fmt):
    return (decode_idx_folder if fmt == "idx" else decode_cifar_folder)(folder, split)


def detect_format(folder):
    """'idx' or 'cifar' for a folder a learner points us at."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir() or (folder / "data_batch_1").exists() \
            or (folder / "test_batch").exists():
        return "cifar"
    if any(folder.glob("*-idx?-ubyte*")):
        return "idx"
    raise DataError(f"{folder}: found neither IDX files (*-idx3-ubyte[.gz]) nor CIFAR batches "
                    "(data_batch_1..5, test_batch).")


# ----------------------------------------------------------------------------- verification

def verify(spec, split, images, labels):
    """Raise DataError unless decoded content matches everything pinned about this split."""
    where = f"{spec.name}/{split}"
    if images.shape[1:] != spec.shape:
        raise DataError(f"{where}: images have shape {images.shape[1:]}, expected {spec.shape}.")
    if len(images) != spec.counts[split]:
        raise DataError(f"{where}: {len(images)} images, expected {spec.counts[split]} (truncated?).")
    counts = tuple(np.bincount(labels, minlength=len(spec.classes)).tolist())
    if counts != spec.label_counts[split]:
        raise DataError(f"{where}: images per class {counts}, expected {spec.label_counts[split]}.")
    pinned = spec.sha256[split]
    if pinned is not None and content_sha256(images, labels) != pinned:
        raise DataError(f"{where}: content checksum differs from the pinned one: "
                        "the files are corrupted or are not the official dataset.")


# ----------------------------------------------------------------------------- cache

def write_cache(path, images, labels):
    """Write the .npz cache atomically: a crash or Ctrl-C mid-write leaves no file that later loads.

    The file gets the permissions of any file you create (0644 with the usual umask), not mkstemp's
    0600, so the other users of a shared data folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels,
                     sha256=np.array(content_sha256(images, labels)))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    except BaseException:      # includes KeyboardInterrupt
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask():
    mask = os.umask(0o022)  # the only way to read the umask is to set it; put it back at once
    os.umask(mask)
    return mask


def clean_partials(path, max_age_s=STALE_PARTIAL_S):
    """Delete <cache>.*.partial files older than max_age_s: a process killed mid-write (SIGKILL, power
    cut) cannot clean up after itself. Younger ones may be another process's write in progress."""
    path = Path(path)
    for partial in path.parent.glob(path.name + ".*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > max_age_s:
                partial.unlink()
        except OSError:  # gone already, or not ours to delete: harmless either way
            pass


def read_cache(path):
    """images, labels from a cache file, after checking its own stored checksum."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, stored = z["images"], z["labels"], str(z["sha256"])
    except Exception as e:  # zipfile, zlib, ValueError...: all mean the file is damaged
        raise DataError(f"{path}: corrupted or truncated cache ({type(e).__name__}: {e}).") from e
    if content_sha256(images, labels) != stored:
        raise DataError(f"{path}: cache content does not match its own checksum (corrupted).")
    return images, labels


# ----------------------------------------------------------------------------- sources

def _download(spec, raw_dir):
    """Let torchvision download (and md5-check) the official archives into raw_dir."""
    import torchvision
    dataset_class = getattr(torchvision.datasets, spec.torchvision)
    # torchvision puts IDX files under <root>/<ClassName>/raw and CIFAR under <root>/cifar-10-batches-py
    for train in (True, False):
        dataset_class(root=str(raw_dir / "torchvision"), train=train, download=True)
    if spec.format == "idx":
        return raw_dir / "torchvision" / spec.torchvision / "raw"
    return raw_dir / "torchvision" / "cifar-10-batches-py"


def _sources(spec, root):
    raw = root / spec.name / "raw"
    yield f"raw files in {raw}", lambda: raw
    if spec.name in ("fashion-mnist",):
        debian = DEBIAN_DIR / spec.name
        yield f"Debian package {spec.apt_package} ({debian})", lambda: debian
    yield "torchvision download", lambda: _download(spec, raw)


def fix_command(spec):
    """The exact command(s) that make a dataset loadable, for error messages."""
    fetch = f"`python -m recipe_kit fetch {spec.name}` on a machine with internet"
    if spec.apt_package:
        return f"`sudo apt-get install {spec.apt_package}` (Debian/Ubuntu, offline), or {fetch}"
    return fetch


def load_dataset(name="fashion-mnist", split="train", root=None):
    """Load one split as Images(images (N,C,H,W) uint8, labels (N,) int64, classes).

    `name` is one of SPECS (verified against pinned facts, cached under `root`), or a folder of
    your own in IDX or CIFAR-batch format (decoded as is; class names are the label numbers).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: use 'train' or 'test'.")
    if name not in SPECS:
        return _load_folder(name, split)
    spec = SPECS[name]
    root = Path(root) if root is not None else DATA_DIR
    cache = root / spec.name / f"{split}.npz"
    tried, damaged = [], []  # every source tried; those that held bad data (reported even on success)
    clean_partials(cache)
    if cache.exists():
        try:
            if not os.access(cache, os.R_OK):
                raise DataError(f"{cache}: not readable by you (mode {cache.stat().st_mode & 0o777:o}); ask its "
                                "owner to `chmod g+r,o+r` it, or set RECIPE_DATA_DIR to a folder of your own.")
            images, labels = read_cache(cache)
            verify(spec, split, images, labels)
            return _as_images(images, labels, spec.classes)
        except DataError as e:
            tried.append(f"cache {cache}: {e}")
            damaged.append(tried[-1])
    else:
        tried.append(f"cache {cache}: not there yet")
    for description, locate in _sources(spec, root):
        try:
            images, labels = decode_folder(locate(), split, spec.format)
            verify(spec, split, images, labels)
        except FileNotFoundError as e:  # absent: normal, try the next source
            tried.append(f"{description}: {e}")
            continue
        except (DataError, OSError, RuntimeError) as e:  # present but bad, or the download failed
            tried.append(f"{description}: {e}")
            damaged.append(tried[-1])
            continue
        try:
            write_cache(cache, images, labels)
        except OSError as e:  # read-only or shared folder: the data are verified, only the cache is missing
            warnings.warn(f"{spec.name}/{split}: loaded and verified from {description}, but not cached: cannot "
                          f"write {cache} ({e.strerror or e}). Each load decodes it again; set RECIPE_DATA_DIR "
                          "to a folder you can write to for a cache.", stacklevel=2)
        if damaged:
            warnings.warn(f"{spec.name}/{split} loaded from {description}, after skipping bad data:\n  "
                          + "\n  ".join(damaged), stacklevel=2)
        return _as_images(images, labels, spec.classes)
    raise DataError(f"could not load {spec.name}/{split}. Tried, in order:\n  - " + "\n  - ".join(tried)
                    + f"\nFix: {fix_command(spec)}, or copy the official files into {root / spec.name / 'raw'}.")


def train_val_split(data, val_size=10000, seed=0):
    """Split Images into (train, val) by a seeded permutation: the test split stays untouched until
    the very end of the course, so every choice before that is made on val."""
    if not 0 < val_size < len(data):
        raise ValueError(f"val_size={val_size}: must be between 1 and {len(data) - 1} for {len(data)} images.")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (Images(data.images[train], data.labels[train], data.classes),
            Images(data.images[val], data.labels[val], data.classes))


def _load_folder(folder, split):
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"unknown dataset {str(folder)!r}: use one of {sorted(SPECS)} "
                        "or a folder holding IDX files or CIFAR batches.")
    images, labels = decode_folder(folder, split, detect_format(folder))
    if len(labels) == 0:
        raise DataError(f"{folder}: the {split} split is empty.")
    classes = tuple(str(c) for c in range(int(labels.max()) + 1))
    return _as_images(images, labels, classes)


def _as_images(images, labels, classes):
    return Images(torch.from_numpy(np.array(images, dtype=np.uint8)),
                  torch.from_numpy(np.array(labels, dtype=np.int64)), tuple(classes))
