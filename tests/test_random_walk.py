"""The sparse random walk against the plain dense reference (benchmarks/dense_rw_reference.py), and the labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dense_rw_reference import (dense_affinity, dense_random_walk, dense_random_walk_timed_parts,  # noqa: E402
                                line_points, pair_offsets)

from orand_addon import random_walk  # noqa: E402
from orand_addon.refine.paths import path_points, path_table  # noqa: E402
from orand_addon.refine.random_walk import WALK_METHODS, prepare_cam, transition_stencil, walk_to_maps, walk_weights
from orand_addon.masks import maps_to_mask  # noqa: E402


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


def boundary_map(rng: np.random.Generator, h: int, w: int, style: str) -> np.ndarray:
    """Random boundaries: sparse speckle, or regions split by lines, with noise."""
    if style == "speckle":
        return (rng.uniform(0, 1, (h, w)) ** 4).astype(np.float32)
    edge = rng.uniform(0, 0.15, (h, w))
    edge[rng.integers(0, h), :] = rng.uniform(0.6, 1.0)
    edge[:, rng.integers(0, w)] = rng.uniform(0.6, 1.0)
    return edge.astype(np.float32)


CASES = [  # (h, w, radius, exp_times, style): borders everywhere, maps smaller than the radius, 1-pixel strips
    (12, 17, 5, 8, "regions"),
    (20, 23, 5, 8, "speckle"),
    (9, 31, 3, 8, "regions"),
    (16, 14, 7, 6, "regions"),
    (3, 4, 5, 8, "speckle"),
    (1, 15, 5, 8, "regions"),
    (13, 1, 4, 8, "speckle"),
    (15, 15, 5, 3, "regions"),
    (10, 12, 2, 8, "regions"),
    (7, 9, 1, 8, "speckle"),
]


GATHER_TOO = {(12, 17), (1, 15), (3, 4)}


@pytest.mark.parametrize("h,w,radius,exp_times,style", CASES)
def test_sparse_walk_equals_dense_reference(h, w, radius, exp_times, style):
    rng = np.random.default_rng(h * 100 + w + radius)
    edge = boundary_map(rng, h, w, style)
    cam = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    ref = dense_random_walk(cam, edge, beta=10, exp_times=exp_times, radius=radius)
    methods = WALK_METHODS if (h, w) in GATHER_TOO else ("auto", "csr")  # gather (the GPU path) is slow on CPU
    for method in methods:
        out = random_walk(torch.from_numpy(cam), torch.from_numpy(edge), beta=10, exp_times=exp_times,
                          radius=radius, method=method)
        assert out.shape == (2, h, w) and out.dtype == torch.float32
        assert rel_error(out, ref) <= 1e-4, method
    if (h, w) in GATHER_TOO:  # float32 steps with the gather's pairwise sums (an option on GPU) also qualify
        float32_steps = random_walk(torch.from_numpy(cam), torch.from_numpy(edge), exp_times=exp_times,
                                    radius=radius, method="gather", dtype=torch.float32)
        assert rel_error(float32_steps, ref) <= 1e-4


def test_numpy_inputs_give_the_numpy_of_the_torch_result():
    rng = np.random.default_rng(3)
    edge = boundary_map(rng, 12, 15, "regions")
    cam = rng.uniform(0, 1, (2, 12, 15)).astype(np.float32)
    out = random_walk(cam, edge, exp_times=4, radius=3)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, random_walk(torch.from_numpy(cam), torch.from_numpy(edge), exp_times=4,
                                                   radius=3).numpy())
    assert rel_error(torch.from_numpy(out), dense_random_walk(cam, edge, beta=10, exp_times=4, radius=3)) <= 1e-4


def test_irn_like_float32_dense_agrees_within_tolerance():
    """IRN's own computation (dense, float32, repeated squaring) against ours: both near the float64 truth."""
    rng = np.random.default_rng(7)
    edge = boundary_map(rng, 18, 21, "regions")
    cam = rng.uniform(0, 1, (3, 18, 21)).astype(np.float32)
    ref32 = dense_random_walk_timed_parts(torch.from_numpy(cam), torch.from_numpy(edge))
    ref64 = dense_random_walk(cam, edge)
    out = random_walk(torch.from_numpy(cam), torch.from_numpy(edge))
    assert rel_error(out, ref32) <= 1e-4
    assert rel_error(out, ref64) <= rel_error(ref32, ref64) + 1e-6  # never less exact than IRN's own way


def test_edge_with_leading_axis_and_empty_maps():
    rng = np.random.default_rng(3)
    edge = torch.from_numpy(boundary_map(rng, 8, 9, "speckle"))
    cam = torch.rand(2, 8, 9)
    assert torch.equal(random_walk(cam, edge[None], exp_times=4), random_walk(cam, edge, exp_times=4))
    assert random_walk(torch.zeros(0, 8, 9), edge).shape == (0, 8, 9)
    assert float(random_walk(torch.zeros(1, 8, 9), edge).abs().max()) == 0.0


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="NaN or Inf"):
        random_walk(torch.rand(1, 4, 4), torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"same size, got \(1, 4, 4\) and \(4, 5\)"):
        random_walk(torch.rand(1, 4, 4), torch.rand(4, 5))
    with pytest.raises(ValueError, match="unknown random-walk method 'dense'; valid: auto, stencil, gather, csr"):
        random_walk(torch.rand(1, 4, 4), torch.rand(4, 4), method="dense")


@pytest.mark.parametrize("radius", [2, 5, 10])
def test_pairs_and_paths_match_the_independent_definition(radius):
    table = path_table(radius)
    assert sorted(map(tuple, table.directions.tolist())) == sorted(pair_offsets(radius))
    for d in table.directions.tolist():
        assert sorted(map(tuple, path_points(tuple(d)).tolist())) == sorted(line_points(*d))
        assert tuple(path_points(tuple(d))[0]) == tuple(d)  # destination first, as IRN


def test_pair_weights_are_the_dense_affinities_to_the_power_beta():
    rng = np.random.default_rng(11)
    h, w, radius = 9, 11, 4
    edge = boundary_map(rng, h, w, "regions")
    dense = dense_affinity(edge, radius) ** 3
    weights = walk_weights(torch.from_numpy(edge).double(), radius, beta=3)
    for d, (dy, dx) in enumerate(path_table(radius).directions.tolist()):
        for y in range(h):
            for x in range(w):
                inside = y + dy < h and 0 <= x + dx < w
                expected = dense[y * w + x, (y + dy) * w + x + dx] if inside else 0.0
                assert abs(float(weights[d, y, x]) - expected) < 1e-12
    offsets, stencil = transition_stencil(torch.from_numpy(edge).double(), radius, beta=3)
    column_sums = dense.sum(0).reshape(h, w)
    np.testing.assert_allclose(stencil[0].numpy(), 1.0 / column_sums, rtol=1e-12)  # the identity entries


def test_labels_follow_irn_make_sem_seg_labels():
    """Upsample x4 by scale factor, crop, divide by the global max, prepend 0.25, argmax, keys — written out."""
    rng = np.random.default_rng(5)
    rw = torch.from_numpy(rng.uniform(0, 2, (2, 6, 8)).astype(np.float32))
    size, keys = (22, 30), np.array([4, 11])
    maps = walk_to_maps(rw, size)
    up = F.interpolate(rw[None].double(), size=(24, 32), mode="bilinear", align_corners=False)[0, :, :22, :30]
    up = (up / up.max()).numpy()
    np.testing.assert_allclose(maps.numpy(), up, atol=1e-6)
    expected = np.where(np.max(up, 0) > 0.25, keys[np.argmax(up, 0)] + 1, 0)
    assert (maps_to_mask(maps.numpy(), keys, 0.25) == expected).all()
    assert float(walk_to_maps(torch.zeros(1, 3, 3), (9, 9)).abs().max()) == 0.0  # all-zero maps: no NaN


def test_prepare_cam_downsizes_to_ceil_quarter_and_applies_power():
    maps = torch.rand(2, 37, 50)
    cam = prepare_cam(maps, power=1.3)
    assert cam.shape == (2, 10, 13)
    plain = F.interpolate(maps[None], size=(10, 13), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(cam, plain ** 1.3)
