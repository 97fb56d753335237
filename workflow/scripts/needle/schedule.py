"""The log-spaced CNN checkpoint epochs (the relax times), defined exactly.

Torch-free on purpose: the Snakefile imports it to plan the jobs, and the Snakemake driver's
environment need not have torch or numpy.

The authors take the distinct integers of ``numpy.logspace(0, log10(E), P)``, i.e. the values
E^(i / (P - 1)) truncated, i = 0 .. P - 1. Truncating a float makes the result depend on how the
running CPU rounds: 53^(19/19) comes out as 52.999999999999986 on some machines, so the same
config would plan different jobs on different machines. Here each value is the exact integer part
floor(E^(i/n)), n = P - 1: the largest integer k with k^n <= E^i, found with integer arithmetic
only. Epoch 0 (the CNN at init) and the final epoch E are always included.
"""

from __future__ import annotations

from needle.errors import NeedleError


def integer_root(value: int, degree: int) -> int:
    """floor(value ** (1 / degree)) for integers value >= 0, degree >= 1, exactly."""
    if value < 2 or degree == 1:
        return value
    # Start above the root (2^ceil(bits / degree) > value^(1/degree)); Newton's step on integers
    # then decreases monotonically to the floor of the root.
    root = 1 << -(-value.bit_length() // degree)
    while True:
        smaller = ((degree - 1) * root + value // root ** (degree - 1)) // degree
        if smaller >= root:
            return root
        root = smaller


def checkpoint_epochs(epochs: int, points: int = 20) -> list[int]:
    """Epoch 0 and the distinct floor(epochs^(i / (points - 1))), i = 0 .. points - 1, ascending.

    For 100 epochs and 20 points these are the authors' relax times
    0, 1, 2, 3, 4, 5, 6, 8, 11, 14, 18, 23, 29, 37, 48, 61, 78, 100.
    """
    for name, value, least in (("epochs", epochs, 1), ("points", points, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise NeedleError(
                f"checkpoint schedule: {name} must be an integer >= {least}, got {value!r}"
            )
    steps = points - 1
    return sorted({0, *(integer_root(epochs**index, steps) for index in range(points))})
