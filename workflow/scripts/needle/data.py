"""Datasets as whole tensors on the device: Fashion-MNIST, CIFAR-10, CIFAR-100.

Files are read with torchvision's dataset classes (their parsers and integrity checks); the images
are then converted, subset, placed on a canvas and normalised in a few vectorised tensor operations,
so no per-sample work happens at load or training time.

On-disk layout under `data_dir` (what torchvision expects):
  FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   (uncompressed)
  cifar-10-batches-py/, cifar-100-python/                          (+ the downloaded .tar.gz)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.datasets as tvd
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import check_integrity, extract_archive

from needle.errors import NeedleError

DATASETS = {"fashion-mnist", "cifar10", "cifar100"}

# Debian package `dataset-fashion-mnist` installs the four .gz files here.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_DIR_ENV = "NEEDLE_FASHION_MNIST_DIR"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class _Spec:
    label: str  # human-readable name for messages
    torchvision_class: type
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


# Per-channel mean/std of the training images in [0, 1] (the values the authors' code uses for CIFAR).
_SPECS = {
    "fashion-mnist": _Spec("Fashion-MNIST", tvd.FashionMNIST, 1, 28, 10, (0.2860,), (0.3530,)),
    "cifar10": _Spec(
        "CIFAR-10", tvd.CIFAR10, 3, 32, 10, (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
    ),
    "cifar100": _Spec(
        "CIFAR-100", tvd.CIFAR100, 3, 32, 100, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
    ),
}


@dataclass
class Data:
    """A whole dataset as tensors: images float32 normalised (N, C, S, S), labels int64 (N,)."""

    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    in_channels: int
    image_size: int
    num_classes: int
    name: str
    # STAND-IN until the core branch lands: the validation split of the contract
    validation_x: torch.Tensor = field(default=None, repr=False)
    validation_y: torch.Tensor = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Data({self.name}: train {tuple(self.train_x.shape)}, test {tuple(self.test_x.shape)}, "
            f"{self.num_classes} classes, {self.train_x.device})"
        )


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise NeedleError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}")
    return _SPECS[name]


def dataset_shape(name: str, canvas_size: int = 0) -> tuple[int, int, int]:
    """(in_channels, image_size, num_classes) of `name` as `load_dataset` returns it, without
    reading any file. `canvas_size` 0 means the images as shipped."""
    spec = _spec(name)
    return spec.in_channels, _image_size(spec, canvas_size), spec.num_classes


def _image_size(spec: _Spec, canvas_size: int) -> int:
    if canvas_size == 0:
        return spec.image_size
    if canvas_size < spec.image_size:
        raise NeedleError(
            f"canvas_size {canvas_size} is smaller than the {spec.label} images "
            f"({spec.image_size}x{spec.image_size}): use 0 (as shipped) or >= {spec.image_size}"
        )
    return canvas_size


def dataset_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """The folder under `data_dir` that holds the files `load_dataset` reads."""
    spec = _spec(name)
    if name == "fashion-mnist":
        return Path(data_dir) / "FashionMNIST" / "raw"
    return Path(data_dir) / spec.torchvision_class.base_folder


def dataset_files(name: str, data_dir: str | os.PathLike) -> list[Path]:
    """The files `prepare_dataset` provides and `load_dataset` reads (e.g. Snakemake outputs)."""
    folder = dataset_folder(name, data_dir)
    if name == "fashion-mnist":
        return [folder / f for f in FASHION_MNIST_FILES]
    cls = _spec(name).torchvision_class
    return [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]


# ----------------------------------------------------------------------------------------------
# prepare


def prepare_dataset(name: str, data_dir: str | os.PathLike) -> None:
    """Make the raw files of `name` available under `data_dir` (idempotent, safe to interrupt).

    Fashion-MNIST: copied and decompressed from the Debian package folder
    (/usr/share/datasets/fashion-mnist, or $NEEDLE_FASHION_MNIST_DIR), or from .gz files put into
    the target folder, else downloaded by torchvision. CIFAR: torchvision download (or a tarball
    already in `data_dir`) with torchvision's md5 checks. Raises NeedleError when offline and absent.
    """
    _spec(name)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "fashion-mnist":
        _prepare_fashion_mnist(data_dir)
    else:
        _prepare_cifar(name, data_dir)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _prepare_fashion_mnist(data_dir: Path) -> None:
    raw = dataset_folder("fashion-mnist", data_dir)
    if all((raw / f).is_file() for f in FASHION_MNIST_FILES):
        return
    source = Path(os.environ.get(FASHION_MNIST_DIR_ENV) or FASHION_MNIST_DEBIAN_DIR)
    raw.parent.mkdir(parents=True, exist_ok=True)
    # Stage everything in a private temporary folder next to `raw`, then move each complete file
    # into place with an atomic rename: a killed or concurrent run never leaves half a file there.
    with tempfile.TemporaryDirectory(dir=raw.parent, prefix=".prepare-") as tmp:
        tmp = Path(tmp)
        found_in = next((d for d in (source, raw) if _copy_fashion_files(d, tmp)), None)
        if found_in is None:
            _download_fashion_mnist(tmp, raw, source)
            staged = tmp / "FashionMNIST" / "raw"
        else:
            staged = tmp
        try:
            # The Debian archives are recompressed, so torchvision's .gz md5s do not apply to them:
            # parse the files instead (torchvision's own readers), before they reach `raw`.
            _check_fashion_files(staged)
        except Exception as error:
            where = found_in if found_in is not None else "the download"
            raise NeedleError(
                f"Fashion-MNIST files from {where} are unreadable ({_one_line(error)}): "
                f"reinstall them (`apt-get install --reinstall dataset-fashion-mnist`) or "
                f"replace them"
            ) from error
        raw.mkdir(exist_ok=True)
        for f in FASHION_MNIST_FILES:
            os.replace(staged / f, raw / f)


def _copy_fashion_files(source: Path, tmp: Path) -> bool:
    """Copy the four files from `source` (gzipped or not) into `tmp`, decompressed. False if any
    is missing."""
    chosen = []
    for f in FASHION_MNIST_FILES:
        candidates = [source / f, source / (f + ".gz")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return False
        chosen.append(path)
    for path in chosen:
        shutil.copyfile(path, tmp / path.name)
        if path.suffix == ".gz":
            try:
                extract_archive(str(tmp / path.name), str(tmp), remove_finished=True)
            except Exception as error:
                raise NeedleError(
                    f"Fashion-MNIST file {path} is not a valid gzip file ({_one_line(error)}): "
                    f"reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or replace it"
                ) from error
    return True


def _download_fashion_mnist(tmp: Path, raw: Path, source: Path) -> None:
    try:
        tvd.FashionMNIST(str(tmp), train=True, download=True)
    except Exception as error:
        raise NeedleError(
            f"Fashion-MNIST not found and download failed ({_one_line(error)}): run "
            f"`apt-get install dataset-fashion-mnist` (looked in {source}; set "
            f"{FASHION_MNIST_DIR_ENV} to look elsewhere) or put {', '.join(f + '.gz' for f in FASHION_MNIST_FILES)} "
            f"into {raw}"
        ) from error


def _check_fashion_files(folder: Path) -> None:
    for split in ("train", "t10k"):
        images = read_image_file(str(folder / f"{split}-images-idx3-ubyte"))
        labels = read_label_file(str(folder / f"{split}-labels-idx1-ubyte"))
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"{split}: images {tuple(images.shape)}, labels {tuple(labels.shape)}")


def _prepare_cifar(name: str, data_dir: Path) -> None:
    spec = _spec(name)
    cls = spec.torchvision_class
    target = dataset_folder(name, data_dir)
    # The same md5 check torchvision runs before loading (plus the metadata file).
    expected = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    if all(check_integrity(str(target / f), md5) for f, md5 in expected):
        return
    # torchvision downloads the tarball (or reuses a valid one placed in data_dir), checks its md5
    # and extracts it. Doing that in a temporary folder and renaming the result keeps `target`
    # either absent or complete.
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".prepare-") as tmp:
        tarball = data_dir / cls.filename
        if tarball.is_file():  # a tarball put there by hand (offline) or by an earlier run
            try:
                os.link(tarball, Path(tmp) / cls.filename)
            except OSError:
                shutil.copyfile(tarball, Path(tmp) / cls.filename)
        try:
            cls(tmp, train=True, download=True)
        except Exception as error:
            raise NeedleError(
                f"{spec.label} not found in {target} and download failed ({_one_line(error)}): "
                f"put {cls.filename} (from {cls.url}) into {data_dir}"
            ) from error
        os.replace(Path(tmp) / cls.filename, tarball)
        if target.exists():  # failed the md5 check above: replace it
            shutil.rmtree(target)
        os.replace(Path(tmp) / cls.base_folder, target)


# ----------------------------------------------------------------------------------------------
# load


def load_dataset(
    name: str,
    data_dir: str | os.PathLike,
    *,
    train_size: int | None = None,
    validation_size: int = 0,  # STAND-IN until the core branch lands
    test_size: int | None = None,
    canvas_size: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Data:
    """Load a prepared dataset as normalised float32 tensors on `device`.

    train_size: None = all training images, else a class-balanced subset (equal counts per class as
        far as possible) drawn with `seed`, in dataset order; a smaller subset is contained in a
        larger one with the same seed.
    test_size: None = the full test set, else a class-balanced subset that does NOT depend on
        `seed`, so every seed is evaluated on the same test images.
    canvas_size: 0 = images as shipped; else each image is pasted at a random position of a black
        canvas_size x canvas_size canvas. Positions depend only on `seed` and the image's index in
        the full split (train and test use separate random streams), not on the subset sizes.
    """
    spec = _spec(name)
    size = _image_size(spec, canvas_size)
    train_u8, train_y = _read_split(name, data_dir, train=True)
    test_u8, test_y = _read_split(name, data_dir, train=False)

    # STAND-IN until the core branch lands: a fixed validation split, training drawn from the rest
    all_train_u8, all_train_y = train_u8, train_y
    validation_index = (
        _balanced_subset(
            train_y,
            spec.num_classes,
            validation_size,
            _generator(0, "validation"),
            "validation_size",
            spec,
        )
        if validation_size
        else torch.zeros(0, dtype=torch.int64)
    )
    rest = torch.ones(len(train_y), dtype=torch.bool)
    rest[validation_index] = False
    rest_index = torch.nonzero(rest).flatten()
    train_u8, train_y = train_u8[rest_index], train_y[rest_index]
    train_index = _balanced_subset(
        train_y, spec.num_classes, train_size, _generator(seed, "train-subset"), "train_size", spec
    )
    test_index = _balanced_subset(
        test_y, spec.num_classes, test_size, _generator(0, "test-subset"), "test_size", spec
    )
    train_x, train_y = _finish(
        spec, train_u8, train_y, train_index, size, _generator(seed, "train-canvas"), device
    )
    test_x, test_y = _finish(
        spec, test_u8, test_y, test_index, size, _generator(seed, "test-canvas"), device
    )
    validation_x, validation_y = _finish(
        spec,
        all_train_u8,
        all_train_y,
        validation_index,
        size,
        _generator(0, "validation-canvas"),
        device,
    )
    return Data(
        train_x,
        train_y,
        test_x,
        test_y,
        spec.in_channels,
        size,
        spec.num_classes,
        name,
        validation_x,
        validation_y,
    )


def _read_split(name: str, data_dir, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of one split, read by torchvision."""
    spec = _spec(name)
    folder = dataset_folder(name, data_dir)
    if not all(path.is_file() for path in dataset_files(name, data_dir)):
        raise NeedleError(
            f"{spec.label} is not prepared in {folder}: run prepare_dataset({name!r}, "
            f"{str(data_dir)!r}) (the workflow's data rule) first"
        )
    try:
        dataset = spec.torchvision_class(str(data_dir), train=train, download=False)
        images = torch.as_tensor(dataset.data)  # Fashion-MNIST: (N, H, W); CIFAR: (N, H, W, C)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        expected = (spec.in_channels, spec.image_size, spec.image_size)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images {images.dtype} {tuple(images.shape)}, expected {expected}")
        if len(labels) != len(images) or len(labels) == 0:
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= spec.num_classes:
            raise ValueError(f"labels outside 0..{spec.num_classes - 1}")
    except Exception as error:
        raise NeedleError(
            f"{spec.label} files in {folder} are corrupt or unreadable ({_one_line(error)}): "
            f"delete {folder} so that it is prepared again"
        ) from error
    return images.contiguous(), labels


def _generator(seed: int, stream: str) -> torch.Generator:
    """An independent random stream per purpose, identical in every run for the same seed."""
    digest = hashlib.sha256(f"needle:{seed}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _balanced_subset(
    labels: torch.Tensor, num_classes: int, size: int | None, generator, key: str, spec: _Spec
) -> torch.Tensor | None:
    """Indices (ascending) of a class-balanced random subset of `size` items; None = everything.

    Items are ranked within their class in a random order; taking the lowest ranks first (ties
    between classes broken by a random class order) gives equal counts per class, and classes that
    run out simply stop contributing.
    """
    n = len(labels)
    if size is None:
        return None
    if size <= 0 or size > n:
        raise NeedleError(
            f"{key} {size} is not possible: the {spec.label} split has {n} images; "
            f"use 1..{n} or leave {key} unset for all"
        )
    order = torch.randperm(n, generator=generator)
    class_priority = torch.randperm(num_classes, generator=generator)
    shuffled = labels[order]
    by_class = torch.argsort(shuffled, stable=True)
    counts = torch.bincount(shuffled, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[by_class] = torch.arange(n) - starts[shuffled[by_class]]
    sort_key = rank * num_classes + class_priority[shuffled]
    chosen = order[torch.argsort(sort_key)[:size]]
    return torch.sort(chosen).values


def _finish(spec, images_u8, labels, index, size, canvas_generator, device):
    """Subset, place on the canvas and normalise; returns (float32 images, int64 labels)."""
    positions = None
    if size != spec.image_size:
        # Draw a position for every image of the full split so a subset does not shift them.
        offset_range = size - spec.image_size + 1
        positions = torch.randint(0, offset_range, (len(images_u8), 2), generator=canvas_generator)
    if index is not None:
        images_u8, labels = images_u8[index], labels[index]
        positions = positions[index] if positions is not None else None
    # Move uint8 (4x fewer bytes) and do the float work on the device.
    images_u8, labels = images_u8.to(device), labels.to(device)
    if positions is not None:
        images_u8 = place_on_canvas(images_u8, positions.to(device), size)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    images = images_u8.to(torch.float32).div_(255).sub_(mean).div_(std)
    return images, labels


def place_on_canvas(
    images: torch.Tensor, positions: torch.Tensor, canvas_size: int
) -> torch.Tensor:
    """Paste images (N, C, h, w) onto zero canvases (N, C, S, S), image n with its top-left corner
    at positions[n] = (row, col). One indexed assignment, no loop over images."""
    n, channels, h, w = images.shape
    canvas = images.new_zeros((n, channels, canvas_size, canvas_size))
    rows = positions[:, 0:1] + torch.arange(h, device=images.device)  # (N, h)
    cols = positions[:, 1:2] + torch.arange(w, device=images.device)  # (N, w)
    item = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: target view is (N, h, w, C).
    canvas[item, :, rows[:, :, None], cols[:, None, :]] = images.permute(0, 2, 3, 1)
    return canvas
