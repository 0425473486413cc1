"""ORANDNet training data: the store checks, the seeded resumable order, per-worker HDF5 reading.

Also home of :func:`make_tiny_store`, the store the other ``test_orandnet_*`` files train on: pseudo-CAMs of the
VOC-mini images (from their official masks, shrunk 8x to ~46x63 so VGG16 stays fast on CPU) written as native
IRN and MCTformer dumps and fused by the real ``run_fuse``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import add_empty_image, make_tiny_store, voc_mini_ids
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.errors import StoreError
from orand_addon.orandnet.data import (IterationSampler, OrAndMaps, epoch_permutation, make_loader, sample_index,
                                       training_set)
from orand_addon.store.store import Store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("tiny"))


def test_training_set_lists_ids_and_skips_images_without_classes(tiny, tmp_path):
    store = tmp_path / "s.h5"
    store.write_bytes(tiny.read_bytes())
    empty = add_empty_image(store)
    data = training_set(store)
    assert data.ids == voc_mini_ids()
    assert data.skipped_empty == [empty]
    assert data.notes() == [f"skipped 1 images with no classes (nothing to learn): {empty}"]
    with pytest.raises(StoreError, match="no image with classes to train on \\(1 have none\\)"):
        training_set(store, ids=[empty])


def test_store_without_and_or_unknown_ids(tiny, tmp_path):
    store = make_tiny_store(tmp_path, ids=voc_mini_ids()[:2], kinds="or,mean")
    with pytest.raises(StoreError) as err:
        training_set(store)
    assert str(err.value) == f"{store}: no /and maps (has: mean, or); fuse with --kinds or,and first"
    with pytest.raises(StoreError, match="1 ids have no /or maps, e.g. 2099_999999"):
        training_set(tiny, ids=[voc_mini_ids()[0], "2099_999999"])


def test_mismatched_or_and_classes_name_the_image(tiny, tmp_path):
    store = tmp_path / "s.h5"
    store.write_bytes(tiny.read_bytes())
    image_id = voc_mini_ids()[0]
    with Store(store, mode="a") as s:
        maps, _ = s.read_maps("and", image_id)
        s.write_maps("and", image_id, maps, keys=[7])
    with pytest.raises(StoreError, match=f"{image_id}: /or and /and differ \\(classes \\[0\\] vs \\[7\\]"):
        training_set(store)


def test_order_is_seeded_epochs_and_resumes_mid_epoch():
    n, seed = 7, 3
    full = list(IterationSampler(n, seed, 0, 20))
    # independent: concatenated per-epoch permutations, each a permutation of range(n)
    expected = np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(3)])[:20]
    assert full == expected.tolist()
    assert list(IterationSampler(n, seed, 9, 20)) == full[9:]
    assert sorted(epoch_permutation(n, seed, 1).tolist()) == list(range(n))
    assert full != list(IterationSampler(n, seed + 1, 0, 20))
    # two ranks together visit exactly the single-process order, interleaved
    r0, r1 = IterationSampler(n, seed, 0, 10, 0, 2), IterationSampler(n, seed, 0, 10, 1, 2)
    assert [x for pair in zip(r0, r1) for x in pair] == full[:20]
    assert sample_index(9, n, seed) == full[9]


def test_items_equal_the_store_with_and_without_workers(tiny):
    ids = voc_mini_ids()
    dataset = OrAndMaps(tiny, ids)
    sampler = IterationSampler(len(ids), 0, 0, 6)
    in_main = [(b["id"], b["input"].clone(), b["target"].clone()) for b in make_loader(dataset, sampler, 0, False)]
    in_workers = [(b["id"], b["input"], b["target"]) for b in make_loader(dataset, sampler, 2, False)]
    dataset.close()
    assert [x[0] for x in in_main] == [ids[i] for i in sampler]
    assert [x[0] for x in in_workers] == [x[0] for x in in_main]
    with Store(tiny) as s:
        for (image_id, x, y), (_, xw, yw) in zip(in_main, in_workers):
            ref_or, keys = s.read_maps("or", image_id)
            np.testing.assert_array_equal(x.numpy(), ref_or)
            np.testing.assert_array_equal(y.numpy(), s.read_maps("and", image_id)[0])
            assert torch.equal(x, xw) and torch.equal(y, yw)
            assert x.shape[0] == len(keys) > 0
