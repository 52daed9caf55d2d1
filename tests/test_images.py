"""Image decoding: batch streaming gives exactly what decoding everything at once gives."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_noise_jpegs

from ensemble_dfd.data.images import ImageReadError, load_images, read_rgb, stream_images


@pytest.fixture()
def files(tmp_path):
    return write_noise_jpegs(tmp_path, 11)


def test_stream_equals_load_in_order(files):
    batches = list(stream_images(files, 16, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches), load_images(files, 16))
    assert list(stream_images([], 16, batch_size=4)) == []


def test_stream_names_a_corrupt_file(files, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        list(stream_images([*files, str(bad)], 16, batch_size=4))
    with pytest.raises(ImageReadError, match="empty file"):
        (tmp_path / "empty.jpg").write_bytes(b"")
        read_rgb(tmp_path / "empty.jpg")


def test_load_images_equals_decode_then_resize(files):
    from ensemble_dfd.data.images import resize

    expected = np.stack([resize(read_rgb(f), 16) for f in files])
    np.testing.assert_array_equal(load_images(files, 16), expected)
