"""`sr-geo inspect` on one raster and on time stacks (files, globs, folders, STAC), in process through the
real command group: its output lines, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pystac
import pytest
from affine import Affine
from click.testing import CliRunner

from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from flows.cli import main


def inspect(*args: str):
    return CliRunner().invoke(main, ["inspect", *map(str, args)])


def texture(seed: int, shape=(2, 30, 40)) -> np.ndarray:
    return (1 + 200 * smooth_texture(shape, seed)).astype("float32")


def frames(folder: Path) -> list[Path]:
    """Three dates given out of order: the reference (top half masked), one moved by whole pixels (read at
    an offset, covering 28 x 37 of the 30 x 40 reference pixels) and one on a coarser, shifted grid (warped)."""
    mask = np.ones((30, 40), bool)
    mask[:15] = False
    return [
        write_raster(folder / "a_20200110.tif", texture(1), mask=mask),
        write_raster(folder / "b_20200101.tif", texture(2), transform=UTM_TRANSFORM * Affine.translation(-3, 2)),
        write_raster(folder / "c_20200120.tif", texture(3, (2, 20, 24)), nodata=0,
                     transform=UTM_TRANSFORM * Affine.scale(1.8) * Affine.translation(0.3, -0.2)),
    ]


def frame_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.startswith("  ")]


def test_a_stack_lists_its_frames_in_date_order_with_coregistration_and_valid_fraction(tmp_path):
    a, b, c = frames(tmp_path)
    result = inspect(a, b, c, "--tile", "16")
    assert result.exit_code == 0, result.output
    rows = frame_lines(result.stdout)
    assert [row.split("  ")[2] for row in rows] == [str(b), str(a), str(c)]
    assert rows[0].startswith("1  2020-01-01T00:00:00+00:00 (file name)")
    assert f"{b}  read, offset -2,+3 px  valid {100 * 28 * 37 / 1200:.1f} %  shift " in rows[0]
    assert rows[1].endswith(f"{a}  read  valid 50.0 %  shift +0.00,+0.00 px  reference")
    assert f"{c}  warp (cubic)  valid" in rows[2]
    assert "frames      3, order: acquisition date" in result.stdout
    assert "co-reg      1 of 3 frames warped onto the reference grid" in result.stdout
    assert f"reference   frame 2: {a}" in result.stdout
    assert "size        40 x 30 px, 2 bands, float32" in result.stdout  # the reference frame's grid
    assert "model       rnn x4" in result.stdout and "output      160 x 120 px, pixel size 2.5 x 2.5" in result.stdout
    assert "2 x 3 = 6 tiles" in result.stdout


def test_a_glob_and_a_folder_are_the_same_stack_and_a_single_image_model_names_its_frame(tmp_path):
    frames(tmp_path)
    by_glob = inspect(tmp_path / "*.tif", "--model", "cnn")
    by_folder = inspect(tmp_path, "--model", "cnn")
    assert by_glob.exit_code == by_folder.exit_code == 0, by_glob.output + by_folder.output
    assert by_glob.stdout == by_folder.stdout
    assert "note        cnn is a single-image model: a run uses only the clearest frame (3)" in by_glob.stdout


def test_a_stac_item_collection_takes_its_dates_from_the_items(tmp_path):
    items = []
    for i, day in enumerate([20, 3, 11]):
        write_raster(tmp_path / f"img{i}.tif", texture(i))
        item = pystac.Item(f"item{i}", None, None, pystac.utils.str_to_datetime(f"2021-05-{day:02d}T10:00:00Z"), {})
        item.add_asset("image", pystac.Asset(f"img{i}.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "items.json"))
    result = inspect(tmp_path / "items.json", "--asset", "image")
    assert result.exit_code == 0, result.output
    rows = frame_lines(result.stdout)
    assert [Path(row.split("  ")[2]).name for row in rows] == ["img1.tif", "img2.tif", "img0.tif"]
    assert rows[0].startswith("1  2021-05-03T10:00:00+00:00 (STAC datetime)") and rows[2].endswith("reference")
    assert "co-reg      0 of 3 frames warped onto the reference grid: none needed" in result.stdout


def test_one_file_is_inspected_as_a_scene(tmp_path):
    a = frames(tmp_path)[0]
    result = inspect(a, "--model", "bicubic", "--tile", "16")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"source      {a}"
    assert "frames" not in result.stdout and "model       bicubic x4" in result.stdout
    assert "nodata      None + mask" in result.stdout and "2 x 3 = 6 tiles" in result.stdout


@pytest.mark.parametrize("case, message", [
    ("bands", "has 1 band, the reference frame"),
    ("apart", "does not overlap the reference frame"),
    ("undated", "no acquisition date"),
    ("nothing", "names no raster"),
])
def test_a_bad_stack_is_refused_in_one_line(tmp_path, case, message):
    first = write_raster(tmp_path / "a_20200101.tif", texture(1))
    if case == "nothing":
        result = inspect(tmp_path / "*.jp2")
    else:
        other = write_raster(tmp_path / ("b.tif" if case == "undated" else "b_20200102.tif"),
                             texture(2, (1 if case == "bands" else 2, 30, 40)),
                             transform=UTM_TRANSFORM * Affine.translation(1000 if case == "apart" else 0, 0))
        result = inspect(first, other)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("sr-geo: error: ") and result.stderr.count("\n") == 1 and message in result.stderr
