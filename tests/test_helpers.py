"""The shared set-ups of tests/helpers: small copies of the real VOC-mini images with pseudo-CAMs.

(The tests of this module only check the set-up itself.)
"""

from __future__ import annotations


from PIL import Image

from helpers import small_voc, voc_mini_ids  # noqa: E402


def test_small_voc_has_images_and_maps_of_the_same_size(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:2])
    for image_id, (keys, maps) in data.items():
        with Image.open(tmp_path / "img" / f"{image_id}.jpg") as im:
            assert (im.size[1], im.size[0]) == maps.shape[1:]
        assert maps.shape[0] == len(keys) > 0
