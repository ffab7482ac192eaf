"""OME-Zarr in and out: levels, channels and planes read lazily, labels written back as NGFF
``labels/`` that ome-zarr's reader opens and ome-zarr-models validates; lazy TIFFs; folders
and globs of images; ``sam-viz everything IMAGE.zarr``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

from sam_viz import cli
from sam_viz.io import image_sources, open_image, read_image
from sam_viz.ome import (
    check_label_target,
    open_multiscale,
    open_ome_plane,
    smallest_diameter,
    write_labels,
)

FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}


def _write_ome(path, data, axes="yx", fmt=FORMATS["0.5"], levels=3):
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    factors = tuple(2**i for i in range(1, levels))
    write_image(data, group, scale_factors=factors, axes=axes, fmt=fmt)
    return path


@pytest.fixture(scope="module")
def field():
    from sam_viz.synthetic.microscopy import make_field

    return make_field("nuclei", 3, (128, 96))  # non-square: swapped axes show


@pytest.fixture(params=sorted(FORMATS))
def field_zarr(request, tmp_path, field):
    return _write_ome(tmp_path / "field.zarr", field.image, fmt=FORMATS[request.param])


@pytest.fixture
def one_zarr(tmp_path, field):
    """The field as NGFF 0.5 (the command line's tests need one version only)."""
    return _write_ome(tmp_path / "field.zarr", field.image)


@pytest.fixture
def tiny_cli(monkeypatch, tiny_model, tiny_spec):
    """The CLI with the tiny random model (counts the loads)."""
    from sam_viz.predictor import Predictor

    loads = []

    def load(args):
        loads.append(args.model)
        return Predictor(tiny_model, tiny_spec, device="cpu")

    monkeypatch.setattr(cli, "_load_predictor", load)
    return loads


# ---------------------------------------------------------------------------- reading
def test_levels_are_read_lazily_full_resolution_first(field_zarr, field):
    lazy = open_image(field_zarr)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(read_image(field_zarr), field.image)
    assert read_image(field_zarr, level=1).shape == (64, 48)
    assert open_multiscale(field_zarr).downsampling == (1.0, 2.0, 4.0)
    with pytest.raises(ValueError, match="levels 0 to 2"):
        read_image(field_zarr, level=3)


def test_level_auto_keeps_objects_of_the_diameter_large_enough(field_zarr):
    assert open_ome_plane(field_zarr, level="auto", diameter=40).level == 1  # 20 px >= 16
    assert open_ome_plane(field_zarr, level="auto", diameter=70).level == 2
    assert open_ome_plane(field_zarr, level="auto", diameter=10).level == 0
    plane = open_ome_plane(field_zarr, level="auto", diameter=70, min_diameter=40)
    assert (plane.level, plane.downsampling) == (0, 1.0)
    with pytest.raises(ValueError, match="needs --diameter"):
        open_ome_plane(field_zarr, level="auto")


def test_the_model_sets_the_smallest_diameter_auto_keeps():
    from sam_viz.models.registry import MODELS

    assert smallest_diameter(MODELS["lite_medsam"]) < smallest_diameter(MODELS["vit_b"])


def test_a_channel_or_plane_must_be_chosen_when_there_are_several(tmp_path, field):
    stack = np.stack([field.image, field.image // 2])  # (c, y, x)
    path = _write_ome(tmp_path / "two.zarr", stack, axes="cyx")
    with pytest.raises(ValueError, match=r"2 channels; choose one with --channel"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, channel=1), field.image // 2)
    volume = _write_ome(tmp_path / "zstack.zarr", stack[:, None], axes="czyx", levels=1)
    one_plane = read_image(volume, channel=0)  # z has one entry: nothing to choose
    np.testing.assert_array_equal(one_plane, field.image)
    tzyx = _write_ome(tmp_path / "tz.zarr", np.stack([stack, stack]), axes="tzyx", levels=1)
    with pytest.raises(ValueError, match=r"several planes \(t=2, z=2\).*--plane T,Z"):
        read_image(tzyx)
    np.testing.assert_array_equal(read_image(tzyx, plane=(1, 1)), field.image // 2)
    with pytest.raises(ValueError, match="no channel axis"):
        read_image(tzyx, plane=(0, 0), channel=0)


def test_a_big_tiff_is_opened_lazily_and_a_pyramid_level_read(tmp_path):
    image = np.random.default_rng(0).integers(0, 60000, (1024, 768), dtype=np.uint16)
    path = tmp_path / "big.tif"
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, tile=(256, 256), subifds=1)
        tiff.write(image[::2, ::2], tile=(256, 256), subfiletype=1)
    lazy = open_image(path)
    assert isinstance(lazy, da.Array) and lazy.chunksize == (256, 256)
    np.testing.assert_array_equal(lazy[300:310, 500:520].compute(), image[300:310, 500:520])
    np.testing.assert_array_equal(open_image(path, level=1), image[::2, ::2])
    np.testing.assert_array_equal(read_image(path, level=1), image[::2, ::2])
    with pytest.raises(ValueError, match="levels 0 to 1"):
        read_image(path, level=2)
    with pytest.raises(ValueError, match="apply to OME-Zarr"):
        read_image(path, channel=0)


def test_folders_and_globs_expand_to_sorted_images(tmp_path, field):
    for name in ("b.tif", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    _write_ome(tmp_path / "c.zarr", field.image, levels=1)
    (tmp_path / "sub").mkdir()
    folder = image_sources([str(tmp_path)])
    assert [p.rsplit("/", 1)[-1] for p in folder] == ["a.png", "b.tif", "c.zarr"]
    assert image_sources([str(tmp_path / "*.tif"), str(tmp_path / "b.tif")]) == [
        str(tmp_path / "b.tif")
    ]
    assert image_sources([str(tmp_path / "c.zarr"), "sample:coins"])[1] == "sample:coins"
    with pytest.raises(ValueError, match="No images in"):
        image_sources([str(tmp_path / "*.jpg")])


# ---------------------------------------------------------------------------- writing
def _validated(path, version):
    """The image as ome-zarr-models reads it (raises unless it is valid NGFF)."""
    if version == "0.4":
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel
    else:
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
    group = zarr.open_group(str(path), mode="r")
    ImageLabel.from_zarr(group["labels/sam_viz"])
    return Image.from_zarr(group)


def _read_labels(path, name="sam_viz"):
    """The label image through ome-zarr's reader, full resolution."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = [n for n in Reader(parse_url(str(path)))() if n.load(Label)]
    by_name = {n.metadata["name"]: n for n in nodes}
    return np.asarray(by_name[name].data[0]), [d.shape for d in by_name[name].data]


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_labels_go_into_the_image_as_ngff_labels(tmp_path, field, version):
    path = _write_ome(tmp_path / "field.zarr", field.image, fmt=FORMATS[version])
    coarse = field.labels[::2, ::2].astype(np.int32)  # labels of level 1
    write_labels(path, coarse)
    write_labels(path, field.labels.astype(np.int32), "other")
    _validated(path, version)
    labels, shapes = _read_labels(path)
    assert shapes == [(128, 96), (64, 48), (32, 24)]  # as many levels as the image
    np.testing.assert_array_equal(labels[::2, ::2], coarse)
    np.testing.assert_array_equal(_read_labels(path, "other")[0], field.labels)
    listed = zarr.open_group(str(path / "labels"), mode="r").attrs.asdict()
    assert listed.get("ome", listed)["labels"] == ["sam_viz", "other"]


def test_an_existing_label_group_is_kept_without_overwrite(field_zarr, field):
    write_labels(field_zarr, field.labels.astype(np.int32))
    before = _files(field_zarr)
    with pytest.raises(ValueError, match="pass --overwrite"):
        write_labels(field_zarr, np.zeros((128, 96), np.int32))
    assert _files(field_zarr) == before
    write_labels(field_zarr, np.ones((128, 96), np.int32), overwrite=True)
    assert (_read_labels(field_zarr)[0] == 1).all()
    listed = zarr.open_group(str(field_zarr / "labels"), mode="r").attrs.asdict()
    assert listed.get("ome", listed)["labels"] == ["sam_viz"]  # listed once
    assert not [p for p in (field_zarr / "labels").iterdir() if p.name.startswith(".sam")]


def test_labels_that_fit_no_level_or_name_are_refused(field_zarr):
    with pytest.raises(ValueError, match="fit no resolution level"):
        write_labels(field_zarr, np.zeros((100, 100), np.int32))
    with pytest.raises(ValueError, match="plain folder name"):
        check_label_target(field_zarr, "../escape")
    assert not (field_zarr / "labels" / "sam_viz").exists()


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- command line
def test_everything_writes_into_the_zarr_and_a_table_beside_it(
    tiny_cli, one_zarr, field, tmp_path, capsys
):
    args = ["--prompts", "points", "--diameter", "60"]
    assert cli.main(["everything", str(one_zarr), *args]) == 0
    labels, _ = _read_labels(one_zarr)
    assert labels.shape == (128, 96)
    assert (tmp_path / "field_sam_viz.csv").read_text().startswith("label,area")
    before = _files(one_zarr)
    assert cli.main(["everything", str(one_zarr), *args]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and len(tiny_cli) == 1
    assert _files(one_zarr) == before
    assert cli.main(["everything", str(one_zarr), "--overwrite", *args]) == 0


def test_everything_at_a_level_writes_full_resolution_labels(tiny_cli, one_zarr, tmp_path):
    argv = ["everything", str(one_zarr), "--prompts", "points", "--diameter", "60"]
    assert cli.main([*argv, "--level", "auto", "--label-name", "coarse"]) == 0
    assert cli.main([*argv, "--level", "2", "-o", str(tmp_path / "l2.tif")]) == 0
    coarse, shapes = _read_labels(one_zarr, "coarse")
    assert shapes[0] == (128, 96)
    np.testing.assert_array_equal(coarse[::4, ::4], tifffile.imread(tmp_path / "l2.tif"))


def test_everything_on_several_images_writes_one_output_each(tiny_cli, tmp_path, field, capsys):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "one.tif", field.image)
    tifffile.imwrite(images / "two.tif", field.image[::-1])
    out = tmp_path / "out"
    argv = ["everything", str(images), "-o", str(out), "--prompts", "points", "--diameter", "60"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.csv", "one.tif", "two.csv", "two.tif"]
    assert len(tiny_cli) == 1  # one model for all
    assert cli.main([*argv[:2], "-o", str(tmp_path / "x.tif")]) == 2
    assert "names a folder" in capsys.readouterr().err


def test_everything_refuses_before_the_model(tiny_cli, tmp_path, field, capsys):
    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, field.image)
    assert cli.main(["everything", str(tif)]) == 2
    assert "Give -o" in capsys.readouterr().err
    two = _write_ome(tmp_path / "two.zarr", np.stack([field.image] * 2), axes="cyx")
    assert cli.main(["everything", str(two)]) == 2
    assert "--channel" in capsys.readouterr().err
    assert cli.main(["everything", str(tif), "-o", str(tmp_path / "l.tif"), "--channel", "0"]) == 2
    assert "OME-Zarr" in capsys.readouterr().err
    assert tiny_cli == []


def test_a_parquet_table_holds_the_csv_rows(tiny_cli, tmp_path, field):
    pq = pytest.importorskip("pyarrow.parquet")
    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, field.image)
    argv = ["everything", str(tif), "-o", str(tmp_path / "l.tif"), "--prompts", "points"]
    assert cli.main([*argv, "--diameter", "60", "--table", str(tmp_path / "t.parquet")]) == 0
    assert cli.main([*argv, "--diameter", "60", "--overwrite"]) == 0
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    csv_rows = (tmp_path / "l.csv").read_text().splitlines()
    assert len(table) == len(csv_rows) - 1 and csv_rows[0].startswith("label,area")


@pytest.mark.slow
def test_everything_on_ome_zarr_gives_the_labels_of_the_tiff(tmp_path, field):
    """The issue's acceptance: the same labels from an OME-Zarr copy as from the TIFF."""
    tif = tmp_path / "field.tif"
    tifffile.imwrite(tif, field.image)
    path = _write_ome(tmp_path / "field.zarr", field.image)
    assert cli.main(["everything", str(tif), "-o", str(tmp_path / "labels.tif")]) == 0
    assert cli.main(["everything", str(path)]) == 0
    labels, _ = _read_labels(path)
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "labels.tif"))
    assert labels.max() > 5
    _validated(path, "0.5")
