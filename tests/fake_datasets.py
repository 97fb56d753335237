"""Tiny datasets written in the real on-disk formats, for tests that must not need the real data.

Images are seeded random noise mixed with one fixed random pattern per class (the class is visible
in the mean image), so a tiny net can learn something from a few hundred images.

- `write_fake_fashion_mnist(root, ...)`: idx files, either as torchvision reads them
  (`root/FashionMNIST/raw/<name>`, so `root` is a data_dir) or gzipped in a flat folder like the
  Debian package (`gzipped=True`, point $NEEDLE_FASHION_MNIST_DIR at it).
- `write_fake_cifar(root, which, ...)`: the python-pickle batches of the real archives under
  `root/cifar-10-batches-py` or `root/cifar-100-python` (optionally also the .tar.gz).
  torchvision checks those files against the md5s of the real archives, so use
  `patch_torchvision_cifar(monkeypatch, root, which)` to make it accept the fake ones.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

FASHION_MNIST_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def fake_images(n: int, channels: int, size: int, num_classes: int, seed: int):
    """uint8 images (n, size, size, channels) and int64 labels (n,), classes as even as possible.

    Class templates depend only on `num_classes`, `channels` and `size` (not on `seed`), so the
    training and test splits written with different seeds share them.
    """
    templates = np.random.default_rng(12345).random((num_classes, size, size, channels))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    noise = rng.random((n, size, size, channels))
    images = 255 * (0.6 * templates[labels] + 0.4 * noise)
    return images.round().clip(0, 255).astype(np.uint8), labels


def _idx_bytes(array: np.ndarray) -> bytes:
    """The idx ("SN3 Pascal Vincent") format: magic 0x0000 08 <ndim>, big-endian dims, ubyte data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion_mnist(
    root, n_train: int = 200, n_test: int = 100, *, gzipped: bool = False, seed: int = 0
) -> Path:
    """Write fake Fashion-MNIST (1x28x28, 10 classes). Returns the folder holding the four files:
    `root/FashionMNIST/raw` (uncompressed) or, with gzipped=True, `root` itself (<name>.gz)."""
    folder = Path(root) if gzipped else Path(root) / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = fake_images(n, 1, 28, 10, split_seed)
        for kind, array in (("images", images[..., 0]), ("labels", labels)):
            name = FASHION_MNIST_NAMES[(split, kind)]
            content = _idx_bytes(array)
            if gzipped:
                # mtime=0: identical bytes (and md5) in every run
                (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
            else:
                (folder / name).write_bytes(content)
    return folder


_CIFAR = {
    # which: (folder, train files, test file, meta file, tarball, classes, label key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        "cifar-10-python.tar.gz",
        10,
        "labels",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        "cifar-100-python.tar.gz",
        100,
        "fine_labels",
    ),
}


def write_fake_cifar(
    root,
    which: str = "cifar10",
    n_train: int = 250,
    n_test: int = 100,
    *,
    seed: int = 0,
    archive: bool = False,
) -> Path:
    """Write fake CIFAR-10/100 pickles exactly like the extracted real archive (keys, dtypes, the
    (N, 3072) channel-planar rows, meta file) under `root`. CIFAR-10's training images are split
    over data_batch_1..5 like the real ones. With archive=True, also write the .tar.gz into `root`
    (and remove nothing). Returns the extracted folder."""
    folder_name, train_files, test_file, meta_file, tarball, classes, label_key = _CIFAR[which]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n, batch_seed, label):
        images, labels = fake_images(n, 3, 32, classes, batch_seed)
        entry = {
            "batch_label": label,
            label_key: labels.tolist(),
            "data": images.transpose(0, 3, 1, 2).reshape(n, 3072),  # RRR..GGG..BBB.. rows
            "filenames": [f"fake_{batch_seed}_{i}.png" for i in range(n)],
        }
        if which == "cifar100":
            entry["coarse_labels"] = [label // 5 for label in labels.tolist()]
        return entry

    train_parts = np.array_split(np.arange(n_train), len(train_files))
    for i, (name, part) in enumerate(zip(train_files, train_parts)):
        _pickle(folder / name, batch(len(part), seed + 10 * i, f"training batch {i + 1}"))
    _pickle(folder / test_file, batch(n_test, seed + 1, "testing batch 1 of 1"))
    names = [f"class_{k}" for k in range(classes)]
    if which == "cifar10":
        meta = {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}
    else:
        meta = {"fine_label_names": names, "coarse_label_names": [f"super_{k}" for k in range(20)]}
    _pickle(folder / meta_file, meta)
    if archive:
        with tarfile.open(Path(root) / tarball, "w:gz") as tar:
            tar.add(folder, arcname=folder_name)
    return folder


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real archives are Python-2 pickles


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def patch_torchvision_cifar(monkeypatch, root, which: str = "cifar10") -> None:
    """Make torchvision's CIFAR class accept the fake files under `root`.

    torchvision verifies every CIFAR file against the md5 of the real archive (class attributes
    train_list, test_list, meta, tgz_md5); the fake files have other md5s, so swap in theirs.
    If the fake tarball exists, its md5 becomes `tgz_md5`, so torchvision accepts it in place of
    a download when it is put into the data folder (its downloader cannot read file:// URLs).
    """
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if which == "cifar10" else tvd.CIFAR100
    folder_name, train_files, test_file, meta_file, tarball, _, _ = _CIFAR[which]
    folder = Path(root) / folder_name
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f in train_files])
    monkeypatch.setattr(cls, "test_list", [[test_file, _md5(folder / test_file)]])
    meta = dict(cls.meta, md5=_md5(folder / meta_file))
    monkeypatch.setattr(cls, "meta", meta)
    tar_path = Path(root) / tarball
    if tar_path.is_file():
        monkeypatch.setattr(cls, "tgz_md5", _md5(tar_path))
