"""Time series: frame discovery, date order, co-registration onto the reference grid, cloud masks,
refusals, and tiled == whole-image inference for stacks (library path, no Ray)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window

from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from sr_geo.errors import InvalidRasterError, InvalidRequestError
from sr_geo.export import export_cog
from sr_geo.inference import Normalisation, TilePredictor, predict_whole
from sr_geo.models.bicubic import Bicubic
from sr_geo.models.rnn import RNN
from sr_geo.models.temporal import screen_outliers
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.stack import (CloudMask, Stack, inspect_stack, names_a_stack, parse_date, read_on_grid, record_stack,
                          valid_fractions)
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import _Readers, tile_scene, tile_stack

CPU = torch.device("cpu")


def texture(seed: int, shape=(3, 60, 70), offset: float = 0.0) -> np.ndarray:
    return (1 + offset + 1000 * smooth_texture(shape, seed)).astype("float32")


def tagged(path: Path, **tags: str) -> Path:
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**tags)
    return path


def tiled(sources, work: Path, *, tile: int = 24, halo: int = 3, scale: int = 2, **options) -> TileStore:
    """The stack's store after tiling, as the time-series flow makes it."""
    stack = inspect_stack([str(s) for s in sources], **options)
    plan = plan_tiles(stack.scene.grid.height, stack.scene.grid.width, tile=tile, halo=halo, scale=scale)
    url = str(work / "run.zarr")
    store = TileStore.create(url, scene=stack.scene, plan=plan, key=stack.run_key("bicubic", "none", scale, tile, halo, "{}"),
                             model_attrs={"name": "bicubic", "weights_sha256": "none", "receptive_radius": halo},
                             frames=len(stack.frames))
    record_stack(store, stack)
    assert tile_stack(url, workers=2) == plan.n_tiles
    return TileStore.open(url)


def frame_on_grid(store: TileStore, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame of the store reassembled from the tile cores: (bands, H, W) and (H, W)."""
    plan = store.plan
    pixels, valid = store.read_inputs(list(range(plan.n_tiles)))
    image = np.zeros((pixels.shape[2], plan.height, plan.width), pixels.dtype)
    mask = np.zeros((plan.height, plan.width), bool)
    for t in plan.tiles():
        (r0, c0), h, w = t.pad_before, int(t.core.height), int(t.core.width)
        y, x = int(t.core.row_off), int(t.core.col_off)
        image[:, y : y + h, x : x + w] = pixels[t.id, frame, :, r0 : r0 + h, c0 : c0 + w]
        mask[y : y + h, x : x + w] = valid[t.id, frame, r0 : r0 + h, c0 : c0 + w]
    return image, mask


def test_frames_are_ordered_by_acquisition_date_from_tags_and_names(tmp_path):
    september = tagged(write_raster(tmp_path / "scene_a.tif", texture(1)), TIFFTAG_DATETIME="2019:09:04 10:30:00")
    august = write_raster(tmp_path / "x_2019-08-01.tif", texture(2))
    october = tagged(write_raster(tmp_path / "y.tif", texture(3)), ACQUISITIONDATE="2019-10-15")
    also_august = write_raster(tmp_path / "z_20190801.tif", texture(4))
    stack = inspect_stack([str(september), str(august), str(october), str(also_august)])
    assert [Path(f.path).name for f in stack.frames] == ["x_2019-08-01.tif", "z_20190801.tif", "scene_a.tif", "y.tif"]
    assert [f.date_source for f in stack.frames] == ["file name", "file name", "tag TIFFTAG_DATETIME", "tag ACQUISITIONDATE"]
    assert stack.frames[2].acquired == "2019-09-04T10:30:00+00:00"
    assert stack.reference == 2 and stack.order == "acquisition date"  # the first given is the reference
    assert parse_date("m_4709963_se_14_1_20090818").isoformat() == "2009-08-18T00:00:00"
    assert parse_date("tile_12345678") is None


def test_undated_frames_keep_the_order_given_and_partly_dated_stacks_are_refused(tmp_path):
    b, a = write_raster(tmp_path / "b.tif", texture(1)), write_raster(tmp_path / "a.tif", texture(2))
    stack = inspect_stack([str(b), str(a)])
    assert [Path(f.path).name for f in stack.frames] == ["b.tif", "a.tif"]
    assert stack.order.startswith("as given")
    dated = write_raster(tmp_path / "c_20200101.tif", texture(3))
    with pytest.raises(InvalidRequestError, match="no acquisition date"):
        inspect_stack([str(b), str(dated)])


def test_stac_items_give_dates_and_cloud_mask_assets(tmp_path):
    items = []
    for i, day in enumerate([20, 3, 11]):
        write_raster(tmp_path / f"img{i}.tif", texture(i))
        scl = np.full((1, 60, 70), 4, "uint8")
        scl[0, :10, :10] = 9
        write_raster(tmp_path / f"scl{i}.tif", scl)
        item = pystac.Item(f"item{i}", None, None, pystac.utils.str_to_datetime(f"2021-05-{day:02d}T10:00:00Z"), {})
        item.add_asset("image", pystac.Asset(f"img{i}.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
        item.add_asset("SCL", pystac.Asset(f"scl{i}.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
        items.append(item)
    collection = tmp_path / "items.json"
    pystac.ItemCollection(items).save_object(dest_href=str(collection))
    store = tiled([collection], tmp_path, asset="image", mask=CloudMask("asset:SCL", (9,)))
    stack = inspect_stack([str(collection)], asset="image", mask=CloudMask("asset:SCL", (9,)))
    assert [Path(f.path).name for f in stack.frames] == ["img1.tif", "img2.tif", "img0.tif"]
    assert {f.date_source for f in stack.frames} == {"STAC datetime"}
    assert [Path(f.mask_path).name for f in stack.frames] == ["scl1.tif", "scl2.tif", "scl0.tif"]
    _, valid = frame_on_grid(store, 0)
    assert not valid[:10, :10].any() and valid[10:, :].all() and valid[:, 10:].all()


def test_frames_on_the_reference_lattice_are_read_not_warped(tmp_path):
    reference = write_raster(tmp_path / "a_20200101.tif", texture(1))
    same = write_raster(tmp_path / "b_20200102.tif", texture(2))
    moved = write_raster(tmp_path / "c_20200103.tif", texture(3), transform=UTM_TRANSFORM * Affine.translation(4, -3))
    subpixel = write_raster(tmp_path / "d_20200104.tif", texture(4), transform=UTM_TRANSFORM * Affine.translation(0.4, 0))
    store = tiled([reference, same, moved, subpixel], tmp_path)
    stack = inspect_stack([str(reference), str(same), str(moved), str(subpixel)])
    assert [(f.read.kind, f.read.row, f.read.col) for f in stack.frames] == [
        ("read", 0, 0), ("read", 0, 0), ("read", 3, -4), ("warp", 0, 0)]
    for index, path in enumerate([reference, same]):
        with rasterio.open(path) as ds:
            image, valid = frame_on_grid(store, index)
            np.testing.assert_array_equal(image, ds.read())  # pixel-identical: never resampled
            assert valid.all()
    with rasterio.open(moved) as ds:
        image, valid = frame_on_grid(store, 2)
        np.testing.assert_array_equal(image[:, : 60 - 3, 4:], ds.read()[:, 3:, : 70 - 4])  # reference (r, c) = (r + 3, c - 4)
        assert valid[:57, 4:].all() and not valid[57:].any() and not valid[:, :4].any()


def blob(grid_transform: Affine, crs: str, shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    """A Gaussian blob (σ 40 m) at map point `centre` (UTM 18N), rendered on any grid and CRS."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    xs, ys = grid_transform * (cols + 0.5, rows + 0.5)
    if crs != "EPSG:32618":
        xs, ys = (np.asarray(v).reshape(shape) for v in transform_coords(crs, "EPSG:32618", xs.ravel(), ys.ravel()))
    d2 = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2
    return (100 + 1000 * np.exp(-d2 / (2 * 40.0**2)))[None].astype("float32")


def centroid(image: np.ndarray, transform: Affine) -> tuple[float, float]:
    """Map coordinates of the intensity centroid of the blob above its background."""
    weight = np.clip(image[0].astype(np.float64) - 100, 0, None)
    rows, cols = np.mgrid[: weight.shape[0], : weight.shape[1]]
    c, r = (weight * (cols + 0.5)).sum() / weight.sum(), (weight * (rows + 0.5)).sum() / weight.sum()
    return transform * (c, r)


def test_frames_in_other_crs_and_resolutions_land_on_the_same_map_coordinates(tmp_path):
    """A feature at known map coordinates is at those coordinates in every co-registered frame."""
    centre = (435730 + 333.0, 4179460 - 287.0)
    reference = write_raster(tmp_path / "a_20200101.tif", blob(UTM_TRANSFORM, "EPSG:32618", (64, 72), centre))
    coarse_t = Affine(20.0, 0, 435730 - 37, 0, -20.0, 4179460 + 23)  # 20 m, origin off the lattice
    coarse = write_raster(tmp_path / "b_20200201.tif", blob(coarse_t, "EPSG:32618", (36, 40), centre),
                          transform=coarse_t)
    x0, y0 = transform_coords("EPSG:32618", "EPSG:32617", [435730 - 50], [4179460 + 50])
    zone17_t = Affine(12.0, 0, x0[0], 0, -12.0, y0[0])  # another UTM zone, 12 m
    other = write_raster(tmp_path / "c_20200301.tif", blob(zone17_t, "EPSG:32617", (70, 80), centre),
                         transform=zone17_t, crs="EPSG:32617")
    store = tiled([reference, coarse, other], tmp_path, tile=20, halo=2)
    assert [f.read.kind for f in inspect_stack([str(reference), str(coarse), str(other)]).frames] == ["read", "warp", "warp"]
    for frame in range(3):
        image, valid = frame_on_grid(store, frame)
        assert valid[20:44, 20:52].all()
        x, y = centroid(image, UTM_TRANSFORM)
        assert abs(x - centre[0]) < 1.5 and abs(y - centre[1]) < 1.5, (frame, x - centre[0], y - centre[1])
    # And in the output: the untrained rnn is bicubic of the frames' median, whose blob must stay put.
    TilePredictor(str(tmp_path / "run.zarr"), RNN(2, feats=8, blocks=1, encoder_blocks=1), CPU).predict(
        list(range(store.plan.n_tiles)))
    cog = export_cog(TileStore.open(str(tmp_path / "run.zarr"), mode="r"), tmp_path / "sr.tif", tmp_path, threads=1)
    with rasterio.open(cog) as out:
        assert out.crs == "EPSG:32618" and out.transform == UTM_TRANSFORM * Affine.scale(0.5)
        x, y = centroid(out.read(), out.transform)
    assert abs(x - centre[0]) < 1.5 and abs(y - centre[1]) < 1.5, (x - centre[0], y - centre[1])


def test_a_cloud_mask_raster_on_another_grid_invalidates_its_listed_classes(tmp_path):
    frame = write_raster(tmp_path / "s2_20200101.tif", texture(1))
    scl = np.full((1, 30, 35), 4, "uint8")
    scl[0, 5:10, 20:30] = 9  # cloud, 20 m: rows 10..20, cols 40..60 at 10 m
    scl[0, 20:25, 0:5] = 3  # shadow, not in the list below
    write_raster(tmp_path / "s2_20200101_SCL.tif", scl, transform=UTM_TRANSFORM * Affine.scale(2))
    store = tiled([frame], tmp_path, mask=CloudMask("{dir}/{stem}_SCL.tif", (8, 9)))
    _, valid = frame_on_grid(store, 0)
    expected = np.ones((60, 70), bool)
    expected[10:20, 40:60] = False
    np.testing.assert_array_equal(valid, expected)


def test_valid_fractions_are_what_the_tiler_sees(tmp_path):
    """Per-frame share of the reference grid observed (own mask, cover, cloud mask), as `sr-geo inspect`
    prints it: exactly the tiled validity at full sampling, close to it when sampled coarsely."""
    mask = np.ones((60, 70), bool)
    mask[10:30, 5:25] = False
    frames = [
        write_raster(tmp_path / "a_20200101.tif", texture(1), mask=mask),
        write_raster(tmp_path / "b_20200102.tif", texture(2), transform=UTM_TRANSFORM * Affine.translation(4, -3)),
        write_raster(tmp_path / "c_20200103.tif", texture(3, (3, 20, 40)), nodata=0,
                     transform=UTM_TRANSFORM * Affine.scale(1.5) * Affine.translation(0.3, 0)),
    ]
    for i, frame in enumerate(frames):
        scl = np.full((1, 30, 35), 4, "uint8")
        scl[0, 2 * i : 2 * i + 6, 10:20] = 9  # 20 m cloud, another place on each date
        write_raster(frame.with_name(frame.stem + "_SCL.tif"), scl, transform=UTM_TRANSFORM * Affine.scale(2))
    cloud = CloudMask("{dir}/{stem}_SCL.tif", (9,))
    store = tiled(frames, tmp_path, mask=cloud)
    stack = inspect_stack([str(f) for f in frames], mask=cloud)
    tiled_fractions = [frame_on_grid(store, i)[1].mean() for i in range(3)]
    assert tiled_fractions[0] == pytest.approx(1 - (400 + 240 - 10) / 4200)  # hole ∪ cloud (rows 0:12, cols 20:40)
    assert 0.3 < tiled_fractions[2] < 0.5  # c covers the top left of the reference only
    assert valid_fractions(stack) == pytest.approx(tiled_fractions, abs=1e-12)
    assert valid_fractions(stack, max_side=16) == pytest.approx(tiled_fractions, abs=0.05)


def test_valid_fractions_count_a_float_frames_undeclared_nans_as_the_tiler_does(tmp_path):
    data = texture(5).astype("float32")
    holed = data.copy()
    holed[1, 10:30, 20:50] = np.nan  # one band, no nodata declared
    frames = [write_raster(tmp_path / "a_20200101.tif", data), write_raster(tmp_path / "b_20200102.tif", holed)]
    store = tiled(frames, tmp_path)
    stack = inspect_stack([str(f) for f in frames])
    assert valid_fractions(stack) == pytest.approx([1.0, 1 - 600 / 4200], abs=1e-12)
    assert valid_fractions(stack) == pytest.approx([frame_on_grid(store, i)[1].mean() for i in range(2)], abs=1e-12)


def test_sources_name_a_stack_unless_they_are_one_raster_file(tmp_path):
    one = write_raster(tmp_path / "a.tif", texture(1))
    assert not names_a_stack([str(one)]) and not names_a_stack([str(tmp_path / "missing.tif")])
    assert names_a_stack([str(one), str(one)]) and names_a_stack([str(tmp_path)])
    assert names_a_stack([str(tmp_path / "*.tif")]) and names_a_stack([str(tmp_path / "items.json")])


@pytest.mark.parametrize("case, message", [
    ("bands", "has 2 bands, the reference frame"),
    ("dtype", "data type uint16 differs"),
    ("apart", "does not overlap the reference frame"),
    ("reference", "not one of the frames"),
    ("empty", "every pixel of every frame"),
    ("mask", "mask raster not found"),
])
def test_incompatible_frames_are_refused_in_one_line(tmp_path, case, message):
    first = write_raster(tmp_path / "a.tif", texture(1), nodata=0)
    other = {
        "bands": lambda: write_raster(tmp_path / "b.tif", texture(2, (2, 60, 70))),
        "dtype": lambda: write_raster(tmp_path / "b.tif", texture(2).astype("uint16")),
        "apart": lambda: write_raster(tmp_path / "b.tif", texture(2), transform=UTM_TRANSFORM * Affine.translation(500, 0)),
    }.get(case, lambda: write_raster(tmp_path / "b.tif", texture(2)))()
    options = {"reference": {"reference": str(tmp_path / "c.tif")}, "mask": {"mask": CloudMask("{dir}/{stem}_m.tif")}}
    if case == "empty":
        first = write_raster(tmp_path / "a.tif", np.zeros((3, 60, 70), "float32"), nodata=0)
        other = write_raster(tmp_path / "b.tif", np.zeros((3, 60, 70), "float32"), nodata=0)
    with pytest.raises((InvalidRequestError, InvalidRasterError), match=message) as raised:
        inspect_stack([str(first), str(other)], **options.get(case, {}))
    assert "\n" not in str(raised.value)


@functools.cache
def random_rnn(scale: int = 2) -> RNN:
    """A small untrained rnn with a randomised tail; cached, as its theoretical radius is costly to compute."""
    torch.manual_seed(0)
    model = RNN(scale, feats=8, blocks=2, encoder_blocks=1, base_feats=8, base_blocks=2)
    with torch.no_grad():
        for param in (model.tail.weight, model.tail.bias, model.base.tail.weight, model.shift_kernels.kernels):
            param.normal_(0.0, 0.05)
    return model.eval()


def test_tiled_stack_inference_equals_whole_stack_inference(tmp_path):
    """No seams for the recurrent model (halo = its theoretical radius) on read, moved, warped, partly and
    fully masked frames; a single-image model on a stack sees the clearest frame."""
    mask = np.ones((60, 70), bool)
    mask[10:30, 5:25] = False
    frames = [
        write_raster(tmp_path / "a_20200101.tif", texture(1), mask=mask),
        # the first frame's ground, on the lattice moved by (1, 2) pixels, sampled one pixel farther east
        write_raster(tmp_path / "b_20200102.tif", np.roll(texture(1), (-1, -3), axis=(1, 2)),
                     transform=UTM_TRANSFORM * Affine.translation(2, 1)),
        write_raster(tmp_path / "c_20200103.tif", texture(3, (3, 30, 40)), transform=UTM_TRANSFORM * Affine.scale(1.6)),
        write_raster(tmp_path / "d_20200104.tif", np.zeros((3, 60, 70), "float32"), nodata=0),
    ]
    model = random_rnn()
    halo = model.theoretical_radius
    store = tiled(frames, tmp_path, tile=24, halo=halo)
    stack = inspect_stack([str(f) for f in frames])
    grid = stack.scene.grid
    readers = [_Readers(f.path, f.read, grid) for f in stack.frames]
    whole = [read_on_grid(r.get(), Window(0, 0, grid.width, grid.height), f.read) for r, f in zip(readers, stack.frames)]
    for reader in readers:
        reader.close()
    pixels, valid = np.stack([p for p, _ in whole]), np.stack([v for _, v in whole])
    assert valid[3].sum() == 0 and 0 < valid[2].mean() < 1
    norm = Normalisation(*store.band_statistics())
    screened = screen_outliers(torch.from_numpy(norm.apply(pixels, valid))[None], torch.from_numpy(valid)[None])[0]
    assert (valid & ~screened.numpy()).any()  # the rnn's outlier screening is part of what must tile exactly
    shifts = Stack.from_attrs(store.attrs["stack"]).shifts()
    assert np.abs(shifts).max() > 0.1  # the frames' measured shifts reach every tile alike
    for candidate in (model, Bicubic(2)):
        TilePredictor(str(tmp_path / "run.zarr"), candidate, CPU).predict(list(range(store.plan.n_tiles)))
        reference = predict_whole(candidate, pixels, valid, halo, norm, CPU, shifts=shifts)
        tiled_output = TileStore.open(str(tmp_path / "run.zarr")).group["output"][:]
        # float32 sums in another order (model calls hold fewer tiles than the whole image): relative 1e-6
        np.testing.assert_allclose(tiled_output, reference, rtol=1e-6, atol=1e-4)
    assert TilePredictor(str(tmp_path / "run.zarr"), Bicubic(2), CPU).frame == 1  # b covers most valid pixels


def test_a_one_frame_stack_is_the_single_scene_run_of_that_frame(tmp_path):
    path = write_raster(tmp_path / "only_20200101.tif", texture(5), nodata=1)
    model = random_rnn()
    halo = model.theoretical_radius
    stacked = tiled([path], tmp_path, tile=24, halo=halo)
    scene = inspect_scene(str(path))
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=24, halo=halo, scale=2)
    single = str(tmp_path / "single.zarr")
    TileStore.create(single, scene=scene, plan=plan, key=RunKey(scene.path, 0, 0, "rnn", "none", 2, 24, halo),
                     model_attrs={"name": "rnn"})
    tile_scene(single, str(path), workers=2)
    for url in (str(tmp_path / "run.zarr"), single):
        TilePredictor(url, model, CPU).predict(list(range(plan.n_tiles)))
    np.testing.assert_array_equal(stacked.group["input"][:], TileStore.open(single).group["input"][:])
    np.testing.assert_array_equal(TileStore.open(str(tmp_path / "run.zarr")).group["output"][:],
                                  TileStore.open(single).group["output"][:])
