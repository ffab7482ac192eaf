"""Segment everything tile by tile: bounded reads, objects on tile borders found once, and
every front end taking the tiled path for a large image (the 20,000² case is
benchmarks/bench_tiled.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from slide_fixtures import DIAMETER, SIDE, SLIDE, TILE

import sam_viz.image
from sam_viz.automatic import tiled
from sam_viz.automatic.everything import MaskGenerator
from sam_viz.automatic.scoring import cut_objects, score_instances
from sam_viz.automatic.tiled import (
    TileAssembler,
    plan_tiles,
    segment_tile,
    segment_tiled,
    survey,
)
from sam_viz.synthetic.slide import Slide


class Reads:
    """A lazy image that records how many pixels each read returns."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.sizes: list[int] = []

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        self.sizes.append(out.size)
        return out


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return SLIDE.labels((0, 0, SIDE, SIDE))


@pytest.fixture(scope="module")
def overview():
    return survey(SLIDE.image())


def test_tiles_cover_the_image_once_each_with_a_margin():
    tiles = plan_tiles((1000, 1300), 512, 40)
    cover = np.zeros((1000, 1300), np.int32)
    for tile in tiles:
        x0, y0, x1, y1 = tile.core
        cover[y0:y1, x0:x1] += 1
        ox0, oy0, ox1, oy1 = tile.outer
        assert (ox0, oy0) == (max(0, x0 - 40), max(0, y0 - 40))
        assert (ox1, oy1) == (min(1300, x1 + 40), min(1000, y1 + 40))
    assert (cover == 1).all()
    assert [t.index for t in tiles] == list(range(6))
    with pytest.raises(ValueError, match="at least 64"):
        plan_tiles((100, 100), 32, 0)


def test_the_survey_shares_contrast_diameter_and_where_objects_are(overview):
    assert overview.polarity == "bright"
    assert 0.6 * DIAMETER < overview.diameter < 1.6 * DIAMETER
    low, high = overview.limits
    assert low < high
    assert overview.has_content((330, 300, 714, 684))  # an island
    assert not overview.has_content((800, 20, 1000, 200))  # empty slide


def test_the_survey_asks_for_the_diameter_when_there_is_nothing_to_measure():
    empty = Slide((600, 600), (), DIAMETER, chunk=300)
    with pytest.raises(ValueError, match="--diameter"):
        survey(empty.image())
    assert survey(empty.image(), diameter=20).diameter == 20


def test_a_cut_object_belongs_to_the_tile_holding_its_centre(lite_predictor, truth, overview):
    generator = MaskGenerator(lite_predictor)
    image = SLIDE.image()
    tiles = plan_tiles((SIDE, SIDE), TILE, overview.margin)
    results = [segment_tile(generator, image, tile, overview) for tile in tiles]
    cut = _cut_truth(truth)
    assert len(cut) >= 15
    owners = []
    for label in cut:
        mine = truth == label
        owners.append(
            sum(any(_iou(mask, mine) > 0.5 for mask in result.masks) for result in results)
        )
    owners = np.array(owners)
    # Within a quarter diameter of the border both tiles keep an object (painting keeps the
    # first: next test); never neither, and most belong to one.
    assert (owners >= 2).mean() <= 0.5, "objects on tile borders are kept by both tiles"
    assert (owners >= 1).mean() >= 0.9
    for result in results:  # every kept object's centre lies in the tile's core
        x0, y0, x1, y1 = result.tile.core
        for mask in result.masks:
            ys, xs = np.nonzero(mask.crop)
            cx, cy = xs.mean() + mask.box_xyxy[0], ys.mean() + mask.box_xyxy[1]
            assert x0 - 2 <= cx < x1 + 2 and y0 - 2 <= cy < y1 + 2


def test_a_tiled_run_reads_tiles_only_and_finds_the_objects_once(
    lite_predictor, truth, monkeypatch
):
    # Reads are bounded by these and the tile size, never by the image's size.
    monkeypatch.setattr(tiled, "OVERVIEW_PIXELS", 100_000)
    monkeypatch.setattr(tiled, "ESTIMATE_CROP_SIDE", 384)
    image = Reads(SLIDE.image())
    labels = np.zeros((SIDE, SIDE), np.int32)
    steps = []
    result = segment_tiled(
        MaskGenerator(lite_predictor),
        image,
        labels,
        tile_side=TILE,
        progress=lambda done, total: steps.append((done, total)),
    )
    assert result.labels is labels
    largest_tile = (TILE + 2 * survey(SLIDE.image()).margin) ** 2
    assert max(image.sizes) <= max(largest_tile, 100_000), "more than a tile was read at once"
    assert sum(image.sizes) < 3 * SIDE * SIDE
    assert steps[-1][0] == steps[-1][1] and all(
        a <= b for (a, _), (b, _) in itertools.pairwise(steps)
    )

    count = result.num_objects
    assert set(np.unique(labels)) == set(range(count + 1))  # numbered 1..N, no gaps
    rows = result.table()
    assert [r["label"] for r in rows] == list(range(1, count + 1))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    assert [r["area"] for r in rows] == areas.tolist()

    borders = cut_objects(truth, labels, [TILE], [TILE])
    assert borders.total >= 15
    assert borders.split == 0
    assert borders.once >= 0.85 * borders.total
    assert score_instances(labels, truth).f1(0.5) >= 0.7


def test_tile_results_are_painted_in_tile_order_whatever_order_they_arrive(
    lite_predictor, overview
):
    generator = MaskGenerator(lite_predictor)
    image = SLIDE.image()
    tiles = plan_tiles((SIDE, SIDE), TILE, overview.margin)
    results = [segment_tile(generator, image, tile, overview) for tile in tiles]
    forward = TileAssembler(np.zeros((SIDE, SIDE), np.int32))
    backward = TileAssembler(np.zeros((SIDE, SIDE), np.int32))
    for result in results:
        forward.add(result)
    painted = [backward.add(result) for result in reversed(results)]
    assert painted[:-1] == [0] * (len(results) - 1) and painted[-1] == len(results)
    np.testing.assert_array_equal(forward.labels, backward.labels)
    assert forward.rows == backward.rows


def _cut_truth(truth: np.ndarray) -> list[int]:
    from scipy import ndimage

    cut = []
    for label, where in enumerate(ndimage.find_objects(truth), start=1):
        if where is not None:
            rows, cols = where
            if rows.start < TILE < rows.stop or cols.start < TILE < cols.stop:
                cut.append(label)
    return cut


def _iou(mask, full: np.ndarray) -> float:
    x0, y0, x1, y1 = mask.box_xyxy
    inside = full[y0:y1, x0:x1]
    both = np.count_nonzero(inside & mask.crop)
    return both / max(1, np.count_nonzero(full) + mask.area - both)


# ----------------------------------------------------------------------- front ends
def _slide_zarr(path):
    """SLIDE as an NGFF 0.5 image with two levels, written chunk by chunk."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    write_image(SLIDE.image(), group, scale_factors=(2,), axes="yx", fmt=FormatV05())
    return path


def test_the_command_line_streams_tiles_into_ome_zarr_labels_and_a_tiff(
    tmp_path, truth, monkeypatch, capsys
):
    import tifffile
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    from sam_viz import cli

    path = _slide_zarr(tmp_path / "slide.zarr")
    monkeypatch.setattr(sam_viz.image, "TILED_ABOVE", 512 * 512)  # "auto" tiles this image
    monkeypatch.setattr(tiled, "TILE_SIDE", TILE)
    assert cli.main(["everything", str(path), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"tiles of {TILE} px" in said
    group = zarr.open_group(str(path), mode="r")
    ImageLabel.from_zarr(group["labels/sam_viz"])
    Image.from_zarr(group)
    label_group = group["labels/sam_viz"]
    paths = [d["path"] for d in label_group.attrs["ome"]["multiscales"][0]["datasets"]]
    labels = np.asarray(label_group[paths[0]])
    assert label_group[paths[1]].shape == (SIDE // 2, SIDE // 2)
    # Nearest by pixel centres: level 1 takes the centre pixel of each 2 x 2 block.
    np.testing.assert_array_equal(np.asarray(label_group[paths[1]]), labels[1::2, 1::2])
    borders = cut_objects(truth, labels, [TILE], [TILE])
    assert borders.split == 0 and borders.once >= 0.85 * borders.total
    table = (tmp_path / "slide_sam_viz.csv").read_text().splitlines()
    assert len(table) - 1 == labels.max() == len(np.unique(labels)) - 1

    out = tmp_path / "labels.tif"
    argv = ["everything", str(path), "-o", str(out), "--tile", str(TILE), "--device", "cpu"]
    assert cli.main(argv) == 0
    with tifffile.TiffFile(out) as tiff:
        assert tiff.pages[0].is_tiled
        np.testing.assert_array_equal(tiff.asarray(), labels)  # the same run, written alike
    assert not list(tmp_path.glob(".*partial")), "the staging labels were left behind"

    png = ["everything", str(path), "-o", str(tmp_path / "l.png"), "--tile", str(TILE)]
    assert cli.main([*png, "--device", "cpu"]) != 0
    assert "name the label image .tif" in capsys.readouterr().err


def test_the_tile_option_is_checked():
    from sam_viz import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["everything", "a.tif", "-o", "b.tif", "--tile", "32"])
    args = cli.build_parser().parse_args(["everything", "a.tif", "-o", "b.tif", "--tile", "off"])
    assert cli._tile_side(args.tile, (50_000, 50_000)) == 0
    args = cli.build_parser().parse_args(["everything", "a.tif", "-o", "b.tif"])
    assert cli._tile_side(args.tile, (5000, 5000)) == tiled.TILE_SIDE
    assert cli._tile_side(args.tile, (4000, 4000)) == 0


def test_the_jupyter_widget_segments_a_large_image_tile_by_tile(lite_predictor, truth, monkeypatch):
    from sam_viz.jupyter.widget import SamWidget

    seen = _spy_tiles(monkeypatch)
    widget = SamWidget(np.asarray(SLIDE.image()), lite_predictor, background=False)
    run = widget.segment_everything(background=False)
    found = run.wait(300)
    assert len(seen) == 1 and found is seen[0]
    borders = cut_objects(truth, found.labels, [TILE], [TILE])
    assert borders.split == 0 and borders.once >= 0.85 * borders.total
    assert f"{found.num_objects} objects" in widget.status.value
    widget.close()


def _spy_tiles(monkeypatch) -> list:
    """Make every image "large", tiles of TILE; returns the tiled runs' results."""
    monkeypatch.setattr(sam_viz.image, "TILED_ABOVE", 512 * 512)
    seen = []
    real = tiled.segment_tiled

    def spy(*args, **kwargs):
        seen.append(real(*args, **{**kwargs, "tile_side": TILE}))
        return seen[-1]

    monkeypatch.setattr(tiled, "segment_tiled", spy)
    return seen
