"""The microscopy field generator: dtypes, exact labels, sizes, crowding, camera realism,
reproducibility, tiling and the seed streams."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label as connected_components

from sam_viz.synthetic.microscopy import (
    FIELD_KINDS,
    HELD_OUT_SEEDS,
    TUNING_SEEDS,
    Field,
    cell_field,
    histology_field,
    make_field,
    nuclei_field,
    tiled,
)

SHAPE = (160, 224)  # non-square, to catch swapped axes


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    area = np.bincount(labels.ravel())[1:]
    return 2 * np.sqrt(area[area > 0] / np.pi)


def assert_exact_labels(labels: np.ndarray) -> None:
    """Labels 1..N, each one 4-connected region."""
    assert labels.dtype == np.int32
    n = int(labels.max())
    assert n > 0
    assert np.array_equal(np.unique(labels), np.arange(n + 1))
    # Every label value owns exactly one 4-connected region.
    regions = connected_components(labels, background=0, connectivity=1)
    owner = np.zeros(int(regions.max()) + 1, np.int64)
    owner[regions.ravel()] = labels.ravel()
    assert np.array_equal(np.bincount(owner[1:], minlength=n + 1)[1:], np.ones(n, np.int64))


def touching_pairs(labels: np.ndarray) -> int:
    """Number of pixel edges where two different objects meet."""
    horizontal = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    vertical = (labels[1:] != labels[:-1]) & (labels[1:] > 0) & (labels[:-1] > 0)
    return int(horizontal.sum() + vertical.sum())


@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_every_kind_has_its_dtype_shape_and_exact_labels(kind):
    for seed in range(3):
        field = make_field(kind, seed, SHAPE)
        assert isinstance(field, Field) and field.kind == kind
        assert field.labels.shape == SHAPE
        if kind == "histology":
            assert field.image.shape == (*SHAPE, 3) and field.image.dtype == np.uint8
        elif kind == "cells_brightfield":
            assert field.image.shape == SHAPE and field.image.dtype in (np.uint8, np.uint16)
        else:
            assert field.image.shape == SHAPE and field.image.dtype == np.uint16
        assert_exact_labels(field.labels)
        assert field.n_objects == field.labels.max()
        median = np.median(equivalent_diameters(field.labels))
        assert field.diameter == pytest.approx(median, rel=0.03)


@pytest.mark.parametrize(
    ("make", "diameter"),
    [
        (lambda seed, d: nuclei_field(seed, (384, 384), diameter=d), 12.0),
        (lambda seed, d: nuclei_field(seed, (384, 384), diameter=d, density=0.45), 30.0),
        (lambda seed, d: cell_field(seed, (384, 384), diameter=d), 45.0),
        (lambda seed, d: cell_field(seed, (384, 384), diameter=d, modality="phase"), 30.0),
        (lambda seed, d: histology_field(seed, (384, 384), diameter=d), 14.0),
    ],
)
def test_requested_diameter_is_the_median_object_diameter(make, diameter):
    for seed in range(2):
        field = make(seed, diameter)
        assert field.diameter == pytest.approx(diameter, rel=0.06)


def test_default_diameters_lie_in_the_realistic_ranges():
    nuclei = [nuclei_field(seed, (256, 256)).diameter for seed in range(8)]
    cells = [cell_field(seed, (256, 256)).diameter for seed in range(6)]
    assert min(nuclei) >= 8 and max(nuclei) <= 50 and max(nuclei) / min(nuclei) > 1.5
    assert min(cells) >= 20 and max(cells) <= 90


def test_objects_vary_in_size_and_are_not_discs():
    field = nuclei_field(3, (384, 384), diameter=20, density=0.2)
    diameters = equivalent_diameters(field.labels)
    assert 0.1 < diameters.std() / diameters.mean() < 0.4
    # A disc fills ~79 % of its bounding box; ellipses at angles and irregular outlines vary.
    boxes = ndimage.find_objects(field.labels)
    areas = np.bincount(field.labels.ravel())[1:]
    fill = areas / [(b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes]
    assert fill.std() > 0.04


def test_crowded_fields_have_touching_objects():
    nuclei = nuclei_field(4, (256, 256), diameter=20, density=0.45)
    assert touching_pairs(nuclei.labels) > 50
    cells = cell_field(4, (256, 256), diameter=40)
    assert touching_pairs(cells.labels) > 50
    sparse = nuclei_field(4, (256, 256), diameter=20, density=0.02)
    assert touching_pairs(sparse.labels) < touching_pairs(nuclei.labels) / 5


def test_nuclei_are_dim_noisy_counts_on_an_offset():
    for seed in range(4):
        field = nuclei_field(seed, SHAPE)
        image = field.image.astype(np.float64)
        offset = np.percentile(image, 1)
        assert offset > 0 and image.max() - offset < 2000
        # Shot and read noise: neighbouring background pixels differ by more than rounding.
        background = field.labels == 0
        steps = np.diff(image, axis=1)[background[:, 1:] & background[:, :-1]]
        assert steps.std() > 1.0
        # Nuclei are brighter than the background around them.
        assert image[field.labels > 0].mean() > image[background].mean()


def test_nuclei_brightness_varies_between_nuclei():
    field = nuclei_field(7, (384, 384), diameter=20, density=0.2)
    image = field.image.astype(np.float64) - np.percentile(field.image, 1)
    means = ndimage.mean(image, field.labels, np.arange(1, field.n_objects + 1))
    low, high = np.percentile(means, [10, 90])
    assert high / low > 1.5


def test_fields_are_reproducible_from_the_seed_and_differ_between_seeds():
    for kind in FIELD_KINDS:
        first, again = make_field(kind, 11, SHAPE), make_field(kind, 11, SHAPE)
        assert np.array_equal(first.image, again.image)
        assert np.array_equal(first.labels, again.labels)
        other = make_field(kind, 12, SHAPE)
        assert not np.array_equal(first.labels, other.labels)


def test_tiled_keeps_every_object():
    field = nuclei_field(5, SHAPE)
    big = tiled(field, (2, 3))
    assert big.image.shape == (2 * SHAPE[0], 3 * SHAPE[1]) and big.image.dtype == field.image.dtype
    assert big.n_objects == 6 * field.n_objects
    assert_exact_labels(big.labels)
    assert big.diameter == field.diameter and big.kind == field.kind
    # The copy at tile (1, 2) holds the same objects, renumbered.
    corner = big.labels[SHAPE[0] :, 2 * SHAPE[1] :]
    assert np.array_equal(corner > 0, field.labels > 0)
    assert np.array_equal(corner[corner > 0] - 5 * field.n_objects, field.labels[field.labels > 0])
    rgb = tiled(histology_field(5, SHAPE), (2, 1))
    assert rgb.image.shape == (2 * SHAPE[0], SHAPE[1], 3)


def test_seed_streams_are_disjoint():
    assert len(TUNING_SEEDS) >= 1000 and len(HELD_OUT_SEEDS) >= 1000
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)


def test_a_large_field_builds():
    field = nuclei_field(HELD_OUT_SEEDS[0], (2048, 2048))
    assert field.image.shape == (2048, 2048) and field.n_objects > 100


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        make_field("cells", 0)
    with pytest.raises(ValueError, match="modality"):
        cell_field(0, modality="dic")
    with pytest.raises(ValueError, match="diameter"):
        nuclei_field(0, diameter=-3)
    with pytest.raises(ValueError, match="density"):
        nuclei_field(0, density=0)
    with pytest.raises(ValueError, match="shape"):
        nuclei_field(0, (10, 512))
    with pytest.raises(ValueError, match="reps"):
        tiled(nuclei_field(0, SHAPE), (0, 2))
