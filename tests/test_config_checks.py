"""The torch-free config checks and schedule agree with the real networks and with numpy."""

import numpy as np
import pytest

from needle import config_checks, embed, models
from needle.errors import NeedleError
from needle.schedule import checkpoint_epochs


@pytest.mark.parametrize("epochs", [1, 2, 7, 12, 20, 53, 100, 300])
def test_checkpoint_epochs_match_numpy_logspace(epochs):
    expected = sorted({0, *np.logspace(0, np.log10(epochs), 20).astype(int).tolist()})
    assert checkpoint_epochs(epochs) == expected


def test_paper_relax_times():
    assert checkpoint_epochs(100) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        11,
        14,
        18,
        23,
        29,
        37,
        48,
        61,
        78,
        100,
    ]


@pytest.mark.parametrize(
    "model, width, channels, size, classes",
    [
        ("skinny", 64, 3, 32, 10),
        ("skinny", 16, 1, 28, 10),
        ("skinny", 8, 1, 40, 10),
        ("skinny", 4, 1, 32, 10),
        ("alexnet", 0, 3, 32, 100),
        ("alexnet", 0, 1, 40, 10),
    ],
)
def test_arithmetic_parameter_counts_match_the_real_networks(model, width, channels, size, classes):
    cnn = models.build_cnn(model, channels, size, classes, width)
    assert config_checks.parameter_counts(
        model, width, channels, size, classes
    ) == embed.parameter_counts(cnn)


def test_too_small_images_are_refused():
    with pytest.raises(NeedleError, match="too small"):
        config_checks.parameter_counts("alexnet", 0, 3, 8, 10)
