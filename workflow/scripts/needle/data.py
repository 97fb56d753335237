"""Datasets as whole tensors on the device: Fashion-MNIST, CIFAR-10, CIFAR-100.

CIFAR files are read with torchvision's dataset classes (their parsers and md5 checks), Fashion-MNIST's
IDX files by a reader of that simple format (torchvision's import alone costs every training job
about two seconds, for a file format of a 16-byte header and raw bytes; tests check it gives
torchvision's tensors). The images are then converted, subset, placed on a canvas and normalised in
a few vectorised tensor operations, so no per-sample work happens at load or training time.

On-disk layout under `data_dir` (what torchvision expects):
  FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   (uncompressed)
  cifar-10-batches-py/, cifar-100-python/                          (+ the downloaded .tar.gz)
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from needle.errors import NeedleError
from needle.names import DATASETS, DatasetFacts

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
class _Source:
    """How to read a dataset and normalise its pixels (its shape facts live in needle.names)."""

    torchvision_class: str  # in torchvision.datasets, imported only where it is needed
    mean: tuple[float, ...]  # per channel, of pixels in [0, 1]
    std: tuple[float, ...]


_SOURCES = {
    # The training images' own statistics.
    "fashion-mnist": _Source("FashionMNIST", (0.2860,), (0.3530,)),
    # The authors' utils.py values. For CIFAR-100 they are CIFAR-10's training statistics (to five
    # digits), not CIFAR-100's own (about (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)): kept, so
    # that the networks see the inputs the paper's networks saw.
    "cifar10": _Source("CIFAR10", (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
    "cifar100": _Source("CIFAR100", (0.49137, 0.48235, 0.44667), (0.24706, 0.24353, 0.26157)),
}


@dataclass
class Data:
    """A whole dataset as tensors: images float32 normalised (N, C, S, S), labels int64 (N,).
    Without a validation split, validation_x/validation_y are empty: (0, C, S, S) and (0,)."""

    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    validation_x: torch.Tensor = field(repr=False)
    validation_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    in_channels: int
    image_size: int
    num_classes: int
    name: str

    def __repr__(self) -> str:
        return (
            f"Data({self.name}: train {tuple(self.train_x.shape)}, "
            f"validation {tuple(self.validation_x.shape)}, test {tuple(self.test_x.shape)}, "
            f"{self.num_classes} classes, {self.train_x.device})"
        )


def _torchvision_class(name: str):
    """torchvision's dataset class for `name`, imported on first use (see the module docstring)."""
    import torchvision.datasets

    return getattr(torchvision.datasets, _SOURCES[name].torchvision_class)


def _facts(name: str) -> DatasetFacts:
    if name not in DATASETS:
        raise NeedleError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_shape(name: str, canvas_size: int = 0) -> tuple[int, int, int]:
    """(in_channels, image_size, num_classes) of `name` as `load_dataset` returns it, without
    reading any file. `canvas_size` 0 means the images as shipped."""
    facts = _facts(name)
    return facts.in_channels, _image_size(facts, canvas_size), facts.num_classes


def _image_size(facts: DatasetFacts, canvas_size: int) -> int:
    if canvas_size == 0:
        return facts.image_size
    if canvas_size < facts.image_size:
        raise NeedleError(
            f"canvas_size {canvas_size} is smaller than the {facts.label} images "
            f"({facts.image_size}x{facts.image_size}): use 0 (as shipped) or >= {facts.image_size}"
        )
    return canvas_size


def dataset_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """The folder under `data_dir` that holds the files `load_dataset` reads."""
    _facts(name)
    if name == "fashion-mnist":
        return Path(data_dir) / "FashionMNIST" / "raw"
    return Path(data_dir) / _torchvision_class(name).base_folder


def dataset_files(name: str, data_dir: str | os.PathLike) -> list[Path]:
    """The files `prepare_dataset` provides and `load_dataset` reads (e.g. Snakemake outputs)."""
    folder = dataset_folder(name, data_dir)
    if name == "fashion-mnist":
        return [folder / f for f in FASHION_MNIST_FILES]
    cls = _torchvision_class(name)
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
    _facts(name)
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
        if path.suffix != ".gz":
            shutil.copyfile(path, tmp / path.name)
            continue
        try:
            with gzip.open(path) as compressed, open(tmp / path.stem, "wb") as plain:
                shutil.copyfileobj(compressed, plain)
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
            raise NeedleError(
                f"Fashion-MNIST file {path} is not a valid gzip file ({_one_line(error)}): "
                f"reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or replace it"
            ) from error
    return True


def _download_fashion_mnist(tmp: Path, raw: Path, source: Path) -> None:
    try:
        _torchvision_class("fashion-mnist")(str(tmp), train=True, download=True)
    except Exception as error:
        raise NeedleError(
            f"Fashion-MNIST not found and download failed ({_one_line(error)}): run "
            f"`apt-get install dataset-fashion-mnist` (looked in {source}; set "
            f"{FASHION_MNIST_DIR_ENV} to look elsewhere) or put {', '.join(f + '.gz' for f in FASHION_MNIST_FILES)} "
            f"into {raw}"
        ) from error


def _check_fashion_files(folder: Path) -> None:
    for split in ("train", "t10k"):
        images, labels = _read_fashion_split(folder, split)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"{split}: images {tuple(images.shape)}, labels {tuple(labels.shape)}")


def _read_fashion_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W) and uint8 labels (N,) of a Fashion-MNIST split ('train', 't10k')."""
    images = read_idx_bytes(folder / f"{split}-images-idx3-ubyte", ndim=3)
    return images, read_idx_bytes(folder / f"{split}-labels-idx1-ubyte", ndim=1)


def read_idx_bytes(path: Path, ndim: int) -> torch.Tensor:
    """An IDX file of unsigned bytes, the MNIST format: two zero bytes, the type (0x08 =
    unsigned byte), the number of dimensions, each size as a big-endian int32, then the values."""
    content = path.read_bytes()
    header = 4 + 4 * ndim
    if len(content) < header or content[:4] != bytes((0, 0, 0x08, ndim)):
        raise ValueError(f"{path.name} is no IDX file of {ndim}-dimensional unsigned bytes")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(content) - header != math.prod(shape):
        raise ValueError(f"{path.name}: {len(content) - header} values for a shape of {shape}")
    return torch.frombuffer(bytearray(content), dtype=torch.uint8, offset=header).view(shape)


def _prepare_cifar(name: str, data_dir: Path) -> None:
    from torchvision.datasets.utils import check_integrity

    label, cls = _facts(name).label, _torchvision_class(name)
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
                f"{label} not found in {target} and download failed ({_one_line(error)}): "
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
    validation_size: int = 0,
    test_size: int | None = None,
    canvas_size: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Data:
    """Load a prepared dataset as normalised float32 tensors on `device`.

    validation_size: a class-balanced subset of the training split held out for selection, the
        same images for every seed (0 = none: empty validation tensors).
    train_size: None = every training image not held out for validation, else a class-balanced
        subset of those drawn with `seed`, in dataset order; with the same seed and validation
        split, a smaller subset is contained in a larger one.
    test_size: None = the full test set, else a class-balanced subset that does NOT depend on
        `seed`, so every seed is evaluated on the same test images.
    canvas_size: 0 = images as shipped; else each image is pasted at a random position of a black
        canvas_size x canvas_size canvas. Positions are drawn for every image of the full split
        (so a subset does not shift them); training positions depend on `seed`, validation and
        test positions do not.
    """
    facts = _facts(name)
    size = _image_size(facts, canvas_size)
    train_u8, train_labels = _read_split(name, data_dir, train=True)
    test_u8, test_labels = _read_split(name, data_dir, train=False)
    _check_subset_sizes(
        facts, len(train_labels), len(test_labels), train_size, validation_size, test_size
    )

    validation_index = _balanced_subset(
        train_labels, facts.num_classes, validation_size, _fixed_generator("validation-subset")
    )
    rest = _complement(validation_index, len(train_labels))
    train_index = rest[
        _balanced_subset(
            train_labels[rest], facts.num_classes, train_size, _generator(seed, "train-subset")
        )
    ]
    test_index = _balanced_subset(
        test_labels, facts.num_classes, test_size, _fixed_generator("test-subset")
    )

    source = _SOURCES[name]
    train = _finish(source, train_u8, train_labels, train_index, size, seed, "train", device)
    validation = _finish(
        source, train_u8, train_labels, validation_index, size, None, "validation", device
    )
    test = _finish(source, test_u8, test_labels, test_index, size, None, "test", device)
    return Data(
        *train,
        *validation,
        *test,
        in_channels=facts.in_channels,
        image_size=size,
        num_classes=facts.num_classes,
        name=name,
    )


def _check_subset_sizes(
    facts: DatasetFacts,
    train_images: int,
    test_images: int,
    train_size: int | None,
    validation_size: int,
    test_size: int | None,
) -> None:
    """One line naming the key(s) at fault when a split cannot supply the subsets asked for."""
    for key, value, smallest in (
        ("train_size", train_size, 1),
        ("validation_size", validation_size, 0),
        ("test_size", test_size, 1),
    ):
        unset_allowed = key != "validation_size"
        if (value is not None or not unset_allowed) and (
            type(value) is not int or value < smallest
        ):
            raise NeedleError(
                f"{key} {value!r} is not possible: use an integer >= {smallest}"
                + (f" or leave {key} unset for all images" if unset_allowed else "")
            )
    if test_size is not None and test_size > test_images:
        raise NeedleError(
            f"test_size {test_size} is not possible: the {facts.label} test split has "
            f"{test_images} images; use 1..{test_images} or leave test_size unset for all"
        )
    if train_size is None and validation_size >= train_images:
        raise NeedleError(
            f"validation_size {validation_size} is not possible: the {facts.label} training split "
            f"has {train_images} images and some must remain for training; use "
            f"validation_size <= {train_images - 1}"
        )
    if train_size is not None and train_size + validation_size > train_images:
        if validation_size == 0:
            raise NeedleError(
                f"train_size {train_size} is not possible: the {facts.label} training split has "
                f"{train_images} images; use 1..{train_images} or leave train_size unset for all"
            )
        raise NeedleError(
            f"train_size {train_size} + validation_size {validation_size} is more than the "
            f"{train_images} images of the {facts.label} training split (both subsets come from "
            "it): lower train_size or validation_size"
        )


def _read_split(name: str, data_dir, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of one split."""
    facts = _facts(name)
    folder = dataset_folder(name, data_dir)
    if not all(path.is_file() for path in dataset_files(name, data_dir)):
        raise NeedleError(
            f"{facts.label} is not prepared in {folder}: run prepare_dataset({name!r}, "
            f"{str(data_dir)!r}) (the workflow's data rule) first"
        )
    try:
        if name == "fashion-mnist":
            images, labels = _read_fashion_split(folder, "train" if train else "t10k")
            images = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        else:  # torchvision checks the files' md5s, then reads its pickled batches
            dataset = _torchvision_class(name)(str(data_dir), train=train, download=False)
            images = torch.as_tensor(dataset.data).permute(0, 3, 1, 2)  # (N, H, W, C) -> NCHW
            labels = dataset.targets
        labels = torch.as_tensor(labels, dtype=torch.int64)
        expected = (facts.in_channels, facts.image_size, facts.image_size)
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images {images.dtype} {tuple(images.shape)}, expected {expected}")
        if len(labels) != len(images) or len(labels) == 0:
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= facts.num_classes:
            raise ValueError(f"labels outside 0..{facts.num_classes - 1}")
    except Exception as error:
        raise NeedleError(
            f"{facts.label} files in {folder} are corrupt or unreadable ({_one_line(error)}): "
            f"delete {folder} so that it is prepared again"
        ) from error
    return images.contiguous(), labels


def _generator(seed: int, stream: str) -> torch.Generator:
    """An independent random stream per purpose, identical in every run for the same seed."""
    digest = hashlib.sha256(f"needle:{seed}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _fixed_generator(stream: str) -> torch.Generator:
    """A stream that is the same whatever the run's seed (validation and test images and their
    placement). It is seed 0's stream of that name, so seed 0 draws what it always drew."""
    return _generator(0, stream)


def _balanced_subset(
    labels: torch.Tensor, num_classes: int, size: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Indices (ascending) of a class-balanced random subset of `size` items (None = all of them).

    Items are ranked within their class in a random order; taking the lowest ranks first (ties
    between classes broken by a random class order) gives equal counts per class, and classes that
    run out simply stop contributing. The caller has checked that `size` items exist.
    """
    n = len(labels)
    if size is None:
        return torch.arange(n)
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


def _complement(index: torch.Tensor, n: int) -> torch.Tensor:
    """The indices 0..n-1 (ascending) that are not in `index`."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return torch.nonzero(keep).flatten()


def _finish(source, images_u8, labels, index, size, seed, split, device):
    """Take the images `index` (ascending) of a split, place them on the canvas and normalise:
    (float32 images, int64 labels). `seed` None = placement from the split's fixed stream, the
    same for every seed."""
    positions = None
    if size != images_u8.shape[-1]:
        # A position for every image of the full split, so that a subset does not shift them.
        stream = f"{split}-canvas"
        generator = _fixed_generator(stream) if seed is None else _generator(seed, stream)
        offset_range = size - images_u8.shape[-1] + 1
        positions = torch.randint(0, offset_range, (len(images_u8), 2), generator=generator)
        positions = positions[index]
    if len(index) < len(images_u8):  # ascending and distinct: shorter means a proper subset
        images_u8, labels = images_u8[index], labels[index]
    # Move uint8 (4x fewer bytes) and do the float work on the device.
    images_u8, labels = images_u8.to(device), labels.to(device)
    if positions is not None:
        images_u8 = place_on_canvas(images_u8, positions.to(device), size)
    mean = torch.tensor(source.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(source.std, device=device).view(1, -1, 1, 1)
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
