"""Segment everything on microscopy: seeds, overlap resolution, windows, the real model."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.automatic.everything import EVERYTHING_FRACTION, MaskGenerator
from sam_viz.automatic.results import Proposals, to_segmentation
from sam_viz.automatic.scoring import otsu_watershed, score_instances
from sam_viz.automatic.seeds import find_seeds
from sam_viz.masks import InstanceMask
from sam_viz.models.registry import SeededThresholds
from sam_viz.synthetic.microscopy import TUNING_SEEDS, nuclei_field


@pytest.fixture(scope="module")
def field():
    return nuclei_field(TUNING_SEEDS[7], (384, 320), diameter=18.0, density=0.3)


def test_seeds_find_one_seed_per_nucleus(field):
    seeds = find_seeds(field.image, field.diameter, polarity="bright")
    truth = field.labels
    hit = truth[seeds.points_xy[:, 1].astype(int), seeds.points_xy[:, 0].astype(int)]
    objects_hit = np.unique(hit[hit > 0])
    assert len(objects_hit) >= 0.9 * field.n_objects  # nearly every nucleus has a seed
    assert len(seeds) <= 1.1 * field.n_objects  # and few get two
    assert np.count_nonzero(hit == 0) <= 0.05 * len(seeds)  # seeds sit on nuclei
    # Regions are numbered in seed order, inside their boxes.
    for index, (x0, y0, x1, y1) in enumerate(seeds.boxes_xyxy.astype(int)[:20]):
        region = seeds.regions == index + 1
        assert region.any() and not region[:, :x0].any() and not region[:y0].any()
        assert not region[:, x1:].any() and not region[y1:].any()
    assert score_instances(seeds.regions, truth).f1() > 0.8


def test_seeds_refuse_a_bad_diameter(field):
    with pytest.raises(ValueError, match="diameter"):
        find_seeds(field.image, 0.0)


def test_overlapping_masks_never_share_a_pixel():
    big = np.zeros((30, 30), bool)
    big[5:25, 5:25] = True
    small = np.zeros((30, 30), bool)
    small[10:20, 18:28] = True  # overlaps the big one and pokes out of it
    proposals = Proposals(
        (InstanceMask.from_full(big), InstanceMask.from_full(small)),
        np.ones(2, np.float32),
        np.ones(2, np.float32),
        np.zeros((2, 4)),
        np.zeros(2),
    )
    result = to_segmentation(proposals, (30, 30))
    assert result.num_objects == 2
    labels = result.labels
    # Each pixel has one label; the smaller object is whole, the larger keeps the rest.
    assert ((labels == result.mask_labels[1]) == small).all()
    assert ((labels == result.mask_labels[0]) == (big & ~small)).all()


def test_an_object_on_a_window_border_comes_out_once(tiny_predictor):
    image = np.full((200, 420), 10, np.uint8)
    generator = MaskGenerator(
        tiny_predictor, diameter=12, seeded=SeededThresholds(keep_regions=True)
    )
    scaled = generator.scaled(image)
    assert scaled.fraction == EVERYTHING_FRACTION and len(scaled.grid) > 1
    cut = scaled.grid.inners[0][2]  # the border between the first two windows' inner regions
    yy, xx = np.mgrid[:200, :420]
    image[(yy - 100) ** 2 + (xx - cut) ** 2 <= 8**2] = 220  # a 16-px nucleus on the border
    result = generator.generate(image, scaled=generator.scaled(image))
    assert result.num_objects == 1
    x0, _y0, x1, _y1 = result.masks[int(np.flatnonzero(result.mask_labels)[0])].box_xyxy
    assert x0 < cut < x1


@pytest.mark.slow
def test_the_real_model_beats_the_baseline_on_nuclei(lite_predictor, field):
    result = MaskGenerator(lite_predictor).generate(field.image)
    ours = score_instances(result.labels, field.labels)
    baseline = score_instances(otsu_watershed(field.image), field.labels)
    assert ours.f1() > baseline.f1() and ours.f1() >= 0.85
    assert ours.msa > baseline.msa
