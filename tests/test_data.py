"""Specification of needle.data: files in the real formats (tiny fakes), tensors out."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision.datasets as tvd
from conftest import SCRIPTS, script_env
from fake_datasets import patch_torchvision_cifar, write_fake_cifar, write_fake_fashion_mnist
from torchvision.datasets.mnist import read_image_file, read_label_file

from needle import data, names
from needle.errors import NeedleError

N_TRAIN, N_TEST = 200, 100
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """A data_dir with fake Fashion-MNIST in torchvision's layout (FashionMNIST/raw/...)."""
    root = tmp_path_factory.mktemp("fashion")
    write_fake_fashion_mnist(root, N_TRAIN, N_TEST)
    return root


def raw_fashion(root, split="train"):
    prefix = "train" if split == "train" else "t10k"
    folder = Path(root) / "FashionMNIST" / "raw"
    images = read_image_file(str(folder / f"{prefix}-images-idx3-ubyte"))
    labels = read_label_file(str(folder / f"{prefix}-labels-idx1-ubyte"))
    return images, labels


def to_uint8(x, mean, std):
    """Undo the normalisation: back to the 0..255 pixel values."""
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def canvas_positions(canvas, images):
    """For each item, the (row, col) offsets where the canvas crop equals the image exactly."""
    h = images.shape[-1]
    crops = canvas.unfold(2, h, 1).unfold(3, h, 1)  # (N, C, R, R, h, h)
    equal = (crops == images[:, :, None, None]).flatten(-2).all(-1).all(1)  # (N, R, R)
    return [torch.nonzero(e).tolist() for e in equal]


# ---------------------------------------------------------------- shapes, dtypes, normalisation


def test_fashion_mnist_loads_whole_splits_as_normalised_float32_and_int64_labels(fashion_dir):
    d = data.load_dataset("fashion-mnist", fashion_dir)
    assert d.train_x.shape == (N_TRAIN, 1, 28, 28) and d.test_x.shape == (N_TEST, 1, 28, 28)
    assert d.train_x.dtype == d.test_x.dtype == torch.float32
    assert d.train_y.dtype == d.test_y.dtype == torch.int64
    assert (d.in_channels, d.image_size, d.num_classes, d.name) == (1, 28, 10, "fashion-mnist")
    for split, x, y in (("train", d.train_x, d.train_y), ("test", d.test_x, d.test_y)):
        images, labels = raw_fashion(fashion_dir, split)
        expected = (images.float()[:, None] / 255 - FASHION_MEAN) / FASHION_STD
        torch.testing.assert_close(x, expected)
        assert torch.equal(y, labels)


def test_dataset_shape_matches_loaded_data_and_needs_no_files():
    assert data.dataset_shape("fashion-mnist") == (1, 28, 10)
    assert data.dataset_shape("fashion-mnist", canvas_size=40) == (1, 40, 10)
    assert data.dataset_shape("cifar10") == (3, 32, 10)
    assert data.dataset_shape("cifar100", 48) == (3, 48, 100)


@pytest.mark.parametrize("name", sorted(names.DATASETS))
def test_every_named_dataset_can_be_prepared_and_read(name, tmp_path):
    assert data.dataset_files(name, tmp_path)  # the files its preparation provides are known


def test_unknown_dataset_name_is_rejected_listing_the_known_ones():
    with pytest.raises(NeedleError, match="cifar10.*fashion-mnist"):
        data.dataset_shape("mnist")


def test_data_repr_is_a_short_summary_not_the_tensors(fashion_dir):
    d = data.load_dataset("fashion-mnist", fashion_dir, train_size=20, test_size=10)
    assert repr(d) == (
        "Data(fashion-mnist: train (20, 1, 28, 28), validation (0, 1, 28, 28), "
        "test (10, 1, 28, 28), 10 classes, cpu)"
    )


# ---------------------------------------------------------------- subsets


def test_training_subset_is_class_balanced_and_in_dataset_order(fashion_dir):
    full = data.load_dataset("fashion-mnist", fashion_dir)
    d = data.load_dataset("fashion-mnist", fashion_dir, train_size=53, seed=1)
    counts = torch.bincount(d.train_y, minlength=10)
    assert counts.sum() == 53 and counts.max() - counts.min() <= 1
    # each chosen image is a distinct image of the full set, kept in the full set's order
    match = (d.train_x.flatten(1)[:, None] == full.train_x.flatten(1)[None]).all(-1)
    index = match.float().argmax(1)
    assert match.any(1).all() and torch.all(index[1:] > index[:-1])
    assert torch.equal(full.train_y[index], d.train_y)


def test_test_subset_is_class_balanced_and_the_same_for_every_seed(fashion_dir):
    a = data.load_dataset("fashion-mnist", fashion_dir, test_size=30, seed=0)
    b = data.load_dataset("fashion-mnist", fashion_dir, test_size=30, seed=5)
    assert torch.equal(torch.bincount(a.test_y, minlength=10), torch.full((10,), 3))
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)


def test_balanced_subset_takes_everything_from_a_class_that_runs_out():
    labels = torch.tensor([0] * 2 + [1] * 20)
    chosen = data._balanced_subset(labels, 2, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[chosen]).tolist() == [2, 8]


def test_smaller_subset_is_contained_in_larger_one_with_same_seed(fashion_dir):
    small = data.load_dataset("fashion-mnist", fashion_dir, train_size=20, canvas_size=36, seed=4)
    large = data.load_dataset("fashion-mnist", fashion_dir, train_size=60, canvas_size=36, seed=4)
    # same images, same canvas placement: placement depends on the image, not the subset size
    match = (small.train_x.flatten(1)[:, None] == large.train_x.flatten(1)[None]).all(-1)
    assert match.any(1).all()


def test_train_size_larger_than_dataset_is_rejected_naming_key_and_size(fashion_dir):
    with pytest.raises(NeedleError, match=rf"train_size 201 .* has {N_TRAIN} images"):
        data.load_dataset("fashion-mnist", fashion_dir, train_size=N_TRAIN + 1)


def image_indices(subset_x, full_x):
    """For each image of `subset_x`, its index in `full_x` (every image must occur exactly once:
    the fake images are noise, so no two are equal)."""
    match = (subset_x.flatten(1)[:, None] == full_x.flatten(1)[None]).all(-1)
    assert torch.equal(match.sum(1), torch.ones(len(subset_x), dtype=torch.int64))
    return match.float().argmax(1)


def test_validation_split_is_balanced_held_out_and_the_same_for_every_seed(fashion_dir):
    full = data.load_dataset("fashion-mnist", fashion_dir)
    runs = [
        data.load_dataset("fashion-mnist", fashion_dir, train_size=100, validation_size=50, seed=s)
        for s in (0, 1, 2)
    ]
    for d in runs:
        assert d.validation_x.shape == (50, 1, 28, 28) and d.validation_x.dtype == torch.float32
        assert torch.equal(torch.bincount(d.validation_y, minlength=10), torch.full((10,), 5))
        validation = image_indices(d.validation_x, full.train_x)
        train = image_indices(d.train_x, full.train_x)
        assert torch.all(validation[1:] > validation[:-1])  # in dataset order
        assert torch.equal(full.train_y[validation], d.validation_y)
        assert not set(validation.tolist()) & set(train.tolist())  # never trained on
        assert torch.bincount(d.train_y, minlength=10).tolist() == [10] * 10
    for other in runs[1:]:
        assert torch.equal(other.validation_x, runs[0].validation_x)
        assert torch.equal(other.validation_y, runs[0].validation_y)
        assert not torch.equal(
            other.train_y, runs[0].train_y
        )  # the training subset follows the seed


def test_without_train_size_training_gets_every_image_not_held_out(fashion_dir):
    d = data.load_dataset("fashion-mnist", fashion_dir, validation_size=30, seed=3)
    full = data.load_dataset("fashion-mnist", fashion_dir)
    held_out = image_indices(d.validation_x, full.train_x).tolist()
    train = image_indices(d.train_x, full.train_x).tolist()
    assert sorted(held_out + train) == list(range(N_TRAIN)) and len(train) == N_TRAIN - 30


def test_no_validation_split_gives_empty_tensors_of_the_right_shape(fashion_dir):
    d = data.load_dataset("fashion-mnist", fashion_dir, canvas_size=36, train_size=40)
    assert d.validation_x.shape == (0, 1, 36, 36) and d.validation_y.shape == (0,)
    assert d.validation_x.dtype == torch.float32 and d.validation_y.dtype == torch.int64
    assert len(d.train_y) == 40


def test_validation_and_test_placement_is_the_same_for_every_seed(fashion_dir):
    kwargs = dict(canvas_size=40, validation_size=40, test_size=30)
    a = data.load_dataset("fashion-mnist", fashion_dir, seed=0, **kwargs)
    b = data.load_dataset("fashion-mnist", fashion_dir, seed=1, **kwargs)
    assert torch.equal(a.validation_x, b.validation_x) and torch.equal(a.test_x, b.test_x)
    # the training images are the same (all that are not held out) but placed anew per seed
    assert torch.equal(a.train_y, b.train_y) and not torch.equal(a.train_x, b.train_x)


@pytest.mark.parametrize(
    "sizes, message",
    [
        (
            dict(train_size=180, validation_size=30),
            r"^train_size 180 \+ validation_size 30 .* 200 ",
        ),
        (dict(validation_size=N_TRAIN), r"^validation_size 200 .* 200 images"),
        (dict(validation_size=-1), r"^validation_size -1 .* >= 0"),
        (dict(test_size=N_TEST + 1), r"^test_size 101 .* has 100 images"),
        (dict(train_size=0), r"^train_size 0 .* >= 1"),
    ],
)
def test_impossible_subset_sizes_are_refused_in_one_line_naming_the_keys(
    fashion_dir, sizes, message
):
    with pytest.raises(NeedleError, match=message) as error:
        data.load_dataset("fashion-mnist", fashion_dir, **sizes)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_tensors(fashion_dir):
    kwargs = dict(train_size=40, test_size=20, canvas_size=40, seed=7)
    a = data.load_dataset("fashion-mnist", fashion_dir, **kwargs)
    b = data.load_dataset("fashion-mnist", fashion_dir, **kwargs)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_different_seed_gives_different_subset_and_placement(fashion_dir):
    a = data.load_dataset("fashion-mnist", fashion_dir, train_size=40, canvas_size=40, seed=0)
    b = data.load_dataset("fashion-mnist", fashion_dir, train_size=40, canvas_size=40, seed=1)
    originals = data.load_dataset("fashion-mnist", fashion_dir, train_size=40, seed=0)
    assert not torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_y, b.train_y)  # another subset (balanced both times)
    assert torch.equal(originals.train_y, a.train_y)  # placement does not change the subset


# ---------------------------------------------------------------- translated canvas


def test_canvas_contains_each_original_image_exactly_once_at_a_random_position(fashion_dir):
    shipped = data.load_dataset("fashion-mnist", fashion_dir, seed=3)
    moved = data.load_dataset("fashion-mnist", fashion_dir, canvas_size=40, seed=3)
    assert moved.train_x.shape == (N_TRAIN, 1, 40, 40) and moved.image_size == 40
    for a, b in ((shipped.train_x, moved.train_x), (shipped.test_x, moved.test_x)):
        images = to_uint8(a, (FASHION_MEAN,), (FASHION_STD,))
        canvas = to_uint8(b, (FASHION_MEAN,), (FASHION_STD,))
        positions = canvas_positions(canvas, images)
        assert all(len(p) >= 1 for p in positions)  # the whole image, unchanged
        # nothing else on the canvas: background is black (0 before normalisation)
        assert torch.equal(
            canvas.sum((1, 2, 3), dtype=torch.int64), images.sum((1, 2, 3), dtype=torch.int64)
        )
        rows = torch.tensor([p[0][0] for p in positions])
        cols = torch.tensor([p[0][1] for p in positions])
        assert rows.min() >= 0 and rows.max() <= 12 and cols.max() <= 12
        assert len(set(rows.tolist())) > 5 and len(set(cols.tolist())) > 5  # really random


def test_place_on_canvas_puts_image_at_given_corner():
    images = torch.arange(2 * 3 * 2 * 2).view(2, 3, 2, 2) + 1
    canvas = data.place_on_canvas(images, torch.tensor([[0, 3], [2, 1]]), 5)
    assert torch.equal(canvas[0, :, 0:2, 3:5], images[0])
    assert torch.equal(canvas[1, :, 2:4, 1:3], images[1])
    assert canvas.sum() == images.sum()


def test_canvas_smaller_than_the_image_is_rejected(fashion_dir):
    with pytest.raises(NeedleError, match=r"canvas_size 20 .* \(28x28\)"):
        data.load_dataset("fashion-mnist", fashion_dir, canvas_size=20)


# ---------------------------------------------------------------- CIFAR (fake files, real format)


@pytest.mark.parametrize(
    "which, classes, mean, std",
    [
        ("cifar10", 10, (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
        # the authors' utils.py values (CIFAR-10's statistics to five digits)
        ("cifar100", 100, (0.49137, 0.48235, 0.44667), (0.24706, 0.24353, 0.26157)),
    ],
)
def test_cifar_loads_pickled_batches_as_channel_first_normalised_tensors(
    tmp_path, monkeypatch, which, classes, mean, std
):
    folder = write_fake_cifar(tmp_path, which, n_train=300, n_test=120)
    # torchvision checks each file against the real archive's md5s; accept the fake files' md5s
    patch_torchvision_cifar(monkeypatch, tmp_path, which)
    data.prepare_dataset(which, tmp_path)  # already there and verified: nothing to do
    d = data.load_dataset(which, tmp_path, train_size=200, canvas_size=0)
    assert (d.in_channels, d.image_size, d.num_classes) == (3, 32, classes)
    assert d.train_x.shape == (200, 3, 32, 32) and d.test_x.shape == (120, 3, 32, 32)
    counts = torch.bincount(d.train_y, minlength=classes)
    assert counts.max() - counts.min() <= 1
    with open(folder / ("test_batch" if which == "cifar10" else "test"), "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    rows = torch.from_numpy(batch["data"]).view(-1, 3, 32, 32)  # planar R, G, B rows
    assert torch.equal(to_uint8(d.test_x, mean, std), rows)
    key = "labels" if which == "cifar10" else "fine_labels"
    assert d.test_y.tolist() == batch[key]


def test_cifar_translated_variant_keeps_every_image(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=20)
    patch_torchvision_cifar(monkeypatch, tmp_path, "cifar10")
    mean, std = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
    shipped = data.load_dataset("cifar10", tmp_path)
    moved = data.load_dataset("cifar10", tmp_path, canvas_size=40, seed=2)
    positions = canvas_positions(
        to_uint8(moved.train_x, mean, std), to_uint8(shipped.train_x, mean, std)
    )
    assert all(len(p) >= 1 for p in positions)


def test_cifar_prepare_extracts_a_tarball_put_into_the_data_folder(tmp_path, monkeypatch):
    server = tmp_path / "server"
    write_fake_cifar(server, "cifar100", n_train=100, n_test=100, archive=True)
    patch_torchvision_cifar(monkeypatch, server, "cifar100")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cifar-100-python.tar.gz").write_bytes(
        (server / "cifar-100-python.tar.gz").read_bytes()
    )
    monkeypatch.setattr(tvd.CIFAR100, "url", "file:///nonexistent/cifar-100-python.tar.gz")
    data.prepare_dataset("cifar100", data_dir)  # offline: uses the tarball, checks its md5
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "cifar-100-python",
        "cifar-100-python.tar.gz",
    ]
    assert data.load_dataset("cifar100", data_dir).train_x.shape == (100, 3, 32, 32)


def test_cifar_offline_error_names_the_folder_and_the_tarball(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.CIFAR10, "url", "file:///nonexistent/cifar-10-python.tar.gz")
    with pytest.raises(NeedleError) as error:
        data.prepare_dataset("cifar10", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "put cifar-10-python.tar.gz" in message and str(tmp_path) in message


# ---------------------------------------------------------------- Fashion-MNIST preparation


def test_fashion_mnist_prepare_decompresses_the_debian_folder_and_is_idempotent(
    tmp_path, monkeypatch
):
    debian = write_fake_fashion_mnist(tmp_path / "debian", 60, 30, gzipped=True)
    monkeypatch.setenv("NEEDLE_FASHION_MNIST_DIR", str(debian))
    data_dir = tmp_path / "data"
    data.prepare_dataset("fashion-mnist", data_dir)
    files = data.dataset_files("fashion-mnist", data_dir)
    assert all(f.is_file() for f in files)
    assert sorted(os.listdir(data_dir / "FashionMNIST")) == ["raw"]  # no temporary leftovers
    mtimes = [f.stat().st_mtime_ns for f in files]
    data.prepare_dataset("fashion-mnist", data_dir)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    d = data.load_dataset("fashion-mnist", data_dir)
    assert (len(d.train_y), len(d.test_y)) == (60, 30)


def test_fashion_mnist_offline_error_names_the_folder_and_the_apt_package(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NEEDLE_FASHION_MNIST_DIR", str(empty))
    # every download fails as it would offline
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", ["file:///nonexistent/"])
    data_dir = tmp_path / "data"
    with pytest.raises(NeedleError) as error:
        data.prepare_dataset("fashion-mnist", data_dir)
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(data_dir / "FashionMNIST" / "raw") in message
    # nothing half-prepared is left behind, so loading says "prepare", not "corrupt"
    with pytest.raises(NeedleError, match="not prepared"):
        data.load_dataset("fashion-mnist", data_dir)


def test_corrupt_files_raise_an_error_saying_to_delete_the_folder(tmp_path):
    write_fake_fashion_mnist(tmp_path, 50, 20)
    images = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated
    with pytest.raises(NeedleError, match=r"corrupt.*delete .*FashionMNIST/raw"):
        data.load_dataset("fashion-mnist", tmp_path)


def test_corrupt_cifar_files_fail_the_md5_check_and_say_to_delete_the_folder(tmp_path, monkeypatch):
    folder = write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=20)
    patch_torchvision_cifar(monkeypatch, tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(NeedleError, match=r"corrupt.*delete .*cifar-10-batches-py"):
        data.load_dataset("cifar10", tmp_path)


def test_loading_before_preparing_says_to_prepare(tmp_path):
    with pytest.raises(NeedleError, match=r"not prepared .*prepare_dataset\('cifar10'"):
        data.load_dataset("cifar10", tmp_path)


@pytest.mark.skipif(
    not Path(data.FASHION_MNIST_DEBIAN_DIR).is_dir(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_from_the_debian_package_has_60000_and_10000_images(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("NEEDLE_FASHION_MNIST_DIR", raising=False)
    data.prepare_dataset("fashion-mnist", tmp_path)
    d = data.load_dataset("fashion-mnist", tmp_path)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 6000))
    # the normalisation constants are the training set's statistics
    assert abs(d.train_x.mean().item()) < 0.01 and abs(d.train_x.std().item() - 1) < 0.01
    # needle's IDX reader gives torchvision's tensors on the real files too
    images, labels = raw_fashion(tmp_path, "test")
    assert torch.equal(to_uint8(d.test_x, (0.2860,), (0.3530,)).squeeze(1), images)
    assert torch.equal(d.test_y, labels)


# ---------------------------------------------------------------- the IDX reader, startup cost


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda b: b[:3], "no IDX file of 3-dimensional unsigned bytes"),
        (lambda b: b"\x00\x00\x0b\x03" + b[4:], "no IDX file"),  # int16, not unsigned bytes
        (lambda b: b[:2] + b"\x08\x01" + b[4:], "no IDX file of 3-dimensional"),  # 1-d header
        (lambda b: b[:-1], "values for a shape of (50, 28, 28)"),  # one byte short
        (lambda b: b + b"\x00", "values for a shape of (50, 28, 28)"),  # one byte too many
    ],
)
def test_a_damaged_idx_file_is_refused_naming_the_file_and_the_problem(tmp_path, damage, problem):
    write_fake_fashion_mnist(tmp_path, 50, 20)
    images = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(NeedleError) as error:
        data.load_dataset("fashion-mnist", tmp_path)
    message = str(error.value)
    assert "\n" not in message and "train-images-idx3-ubyte" in message and problem in message
    assert "delete" in message


def test_a_corrupt_gzip_file_in_the_debian_folder_is_named(tmp_path, monkeypatch):
    debian = write_fake_fashion_mnist(tmp_path / "debian", 60, 30, gzipped=True)
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    monkeypatch.setenv("NEEDLE_FASHION_MNIST_DIR", str(debian))
    with pytest.raises(NeedleError, match=r"t10k-labels-idx1-ubyte.gz is not a valid gzip file"):
        data.prepare_dataset("fashion-mnist", tmp_path / "data")
    assert not (tmp_path / "data" / "FashionMNIST" / "raw").exists()


def test_a_fashion_mnist_training_job_imports_neither_torchvision_nor_scipy(fashion_dir):
    """They cost a training job's start about three seconds together (torchvision loads
    torch._dynamo); CIFAR jobs and the summary still use them."""
    code = (
        "import sys\n"
        "from needle import cli, stages, data\n"
        f"data.load_dataset('fashion-mnist', {str(fashion_dir)!r}, train_size=20, canvas_size=32)\n"
        "print(sorted(m for m in ('torchvision', 'scipy') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=script_env({"PYTHONPATH": str(SCRIPTS)}),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
