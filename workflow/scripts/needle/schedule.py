"""The log-spaced epochs of the protocol, in pure Python.

Torch-free on purpose: the Snakefile imports it to declare checkpoint outputs, and the Snakemake
driver's environment (e.g. under --use-conda) need not have torch or numpy.
"""

from __future__ import annotations

import math


def checkpoint_epochs(epochs: int, points: int = 20) -> list[int]:
    """Epoch 0 and the distinct integers of ``numpy.logspace(0, log10(epochs), points)``.

    Written out so it matches numpy bit for bit (numpy's linspace sets the last exponent exactly
    to ``stop``); for 100 epochs this gives the authors' relax times
    0, 1, 2, 3, 4, 5, 6, 8, 11, 14, 18, 23, 29, 37, 48, 61, 78, 100.
    """
    if epochs <= 0:
        return [0]
    if points < 2:
        return sorted({0, epochs})
    stop = math.log10(epochs)
    step = stop / (points - 1)
    exponents = [index * step for index in range(points - 1)] + [stop]
    return sorted({0, *(int(10.0**exponent) for exponent in exponents)})
