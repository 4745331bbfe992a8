"""A time series of one place: which rasters are its frames, in which order, and how each is read on the
reference grid.

Frames are files, globs, folders or STAC JSON (Item/ItemCollection/Catalog: local or fsspec assets), as
`sr_geo.catalog.discover` reads them. Everything is checked here, up front, with one-line errors: every
frame must have the reference's band count and data type and overlap it.

Co-registration. The output grid is the reference frame's (the first given, or the one named). A frame
whose pixel lattice is the reference's (same CRS and pixel size, origin an integer number of pixels
away: revisits of one Sentinel-2 or Landsat tile) is *read*, with a window offset and never resampled;
any other frame is *warped* onto the reference grid by GDAL (rasterio's WarpedVRT) at tiling time: cubic,
or average when the frame is finer than the reference. Pixels a frame does not cover are invalid.

Registration. Frames read on the reference lattice are never resampled, yet their geolocation differs by
a fraction of a pixel, which is what fusion lives on. Each frame's sub-pixel shift against the reference
frame is measured once, over the central `SHIFT_WINDOW`² pixels of the reference grid
(`sr_geo.registration`), and recorded with the frame (`Frame.shift`, None when too few pixels are valid in
both or the correlation finds no sub-pixel jitter but a distant peak) for temporal models to place its samples;
the run report lists them.

Time order. Frames are ordered by acquisition date, taken from the first of: the STAC item's
`datetime`; a raster tag (ACQUISITIONDATETIME, ACQUISITIONDATE, ACQUISITION_DATE, DATE_ACQUIRED,
SENSING_TIME, then TIFFTAG_DATETIME); a date in the file name (20190904, 2019-09-04, 2019_09_04, or a
name that is just a year, 1985.tif). Equal dates keep the order given. When no frame has a date the
order given is kept; when only some have one, the stack is refused (the order would be a guess).

Cloud masks (`CloudMask`). Validity is each frame's GDAL mask (nodata, internal mask, alpha) and, when
asked for, a per-frame mask raster: pixels whose mask value is in a list (default: the Sentinel-2
scene classification's no data, defective, cloud shadow, medium and high probability cloud and cirrus
classes) are invalid. The mask raster is found from a template with `{dir}` and `{stem}` (the frame's
folder and file name without extension), e.g. `{dir}/{stem}_SCL.tif`, or for STAC frames `asset:SCL`
(the item's asset of that key); it may lie on another grid (SCL is 20 m) and is read or warped onto the
reference grid like the frames, with nearest-neighbour resampling.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import PurePosixPath

import fsspec
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from sr_geo.catalog import SourceRef, is_glob, discover
from sr_geo.errors import InvalidRasterError, InvalidRequestError
from sr_geo.grid import Grid
from sr_geo.models.registry import ModelSpec
from sr_geo.plan import intersect
from sr_geo.preflight import validate_request
from sr_geo.registration import estimate_shift
from sr_geo.scene import SceneInfo, check_has_valid_pixels, data_bands, finite, inspect_scene, read_valid
from sr_geo.store import RunKey, TileStore

# Sentinel-2 L2A scene classification (SCL): 0 no data, 1 saturated or defective, 3 cloud shadow,
# 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
SCL_INVALID = (0, 1, 3, 8, 9, 10)
DATE_TAGS = ("ACQUISITIONDATETIME", "ACQUISITIONDATE", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME",
             "TIFFTAG_DATETIME")
# A frame is on the reference lattice when its pixel size matches to this relative precision and its
# origin lies this close (in pixels) to a whole number of pixels from the reference origin: far below
# any misregistration that matters, far above the rounding of geotransforms written as text.
PIXEL_SIZE_RTOL = 1e-6
LATTICE_TOLERANCE_PX = 1e-4
# `valid_fractions` samples the reference grid at most this many pixels a side: exact up to that size,
# a close estimate beyond, and a bounded read per frame either way.
VALID_SAMPLE_SIDE = 1024
# Shifts are measured on this many reference-grid pixels a side around the centre: enough for a few
# hundredths of a pixel on real scenes, one bounded read per frame.
SHIFT_WINDOW = 512

_DATE = re.compile(r"(?<!\d)(\d{4})[-_:/]?(\d{2})[-_:/]?(\d{2})(?:[T _]?(\d{2}):?(\d{2})(?::?(\d{2}))?)?(?!\d)")


@dataclass(frozen=True)
class CloudMask:
    """A per-frame mask raster (template or `asset:KEY`) whose values in `invalid` mark invalid pixels."""

    source: str
    invalid: tuple[int, ...] = SCL_INVALID

    def __post_init__(self) -> None:
        if not self.invalid:
            raise InvalidRequestError("a cloud mask needs at least one invalid value")
        if not self.asset_key and "{stem}" not in self.source and "{dir}" not in self.source:
            raise InvalidRequestError(
                f"--mask {self.source}: expected a template with {{dir}} and/or {{stem}} (e.g. {{dir}}/{{stem}}_SCL.tif) "
                "or asset:KEY for STAC items"
            )

    @property
    def asset_key(self) -> str | None:
        return self.source.removeprefix("asset:") if self.source.startswith("asset:") else None

    def path_for(self, frame: str) -> str:
        path = PurePosixPath(frame)
        return self.source.format(dir=str(path.parent), stem=path.stem)


@dataclass(frozen=True)
class GridRead:
    """How a raster is read on the reference grid: `read` at a whole-pixel offset, or `warp`ed.

    For `read`, reference pixel (r, c) is the raster's pixel (r + row, c + col).
    """

    kind: str
    row: int = 0
    col: int = 0
    resampling: str = "nearest"

    @property
    def warped(self) -> bool:
        return self.kind == "warp"


ON_GRID = GridRead("read")


@dataclass(frozen=True)
class Frame:
    """One acquisition: where it is, when it was taken, how it is read, and its mask raster, if any."""

    path: str
    size: int
    mtime: float
    acquired: str | None  # ISO 8601, UTC
    date_source: str
    read: GridRead
    mask_path: str | None = None
    mask_read: GridRead | None = None
    shift: tuple[float, float] | None = None  # (dy, dx) reference pixels: pixel (r, c) shows reference (r + dy, c + dx)

    @classmethod
    def from_attrs(cls, attrs: dict) -> Frame:
        mask_read, shift = attrs["mask_read"], attrs.get("shift")
        return cls(**{**attrs, "read": GridRead(**attrs["read"]),
                      "mask_read": GridRead(**mask_read) if mask_read else None,
                      "shift": tuple(shift) if shift is not None else None})


@dataclass(frozen=True)
class Stack:
    """The frames of one place in time order, the reference frame's header and the mask values."""

    frames: tuple[Frame, ...]
    reference: int  # index into `frames`
    scene: SceneInfo  # the reference frame: the output's grid, bands, data type and nodata
    order: str  # "acquisition date" or "as given (no frame has a date)"
    mask_invalid: tuple[int, ...] = ()

    def to_attrs(self) -> dict:
        """JSON-serialisable: recorded in the run's store, where the tiler reads it."""
        return {
            "frames": [asdict(frame) for frame in self.frames],
            "reference": self.reference,
            "scene": self.scene.to_attrs(),
            "order": self.order,
            "mask_invalid": list(self.mask_invalid),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> Stack:
        return cls(
            frames=tuple(Frame.from_attrs(f) for f in attrs["frames"]),
            reference=attrs["reference"],
            scene=SceneInfo.from_attrs(attrs["scene"]),
            order=attrs["order"],
            mask_invalid=tuple(attrs["mask_invalid"]),
        )

    def shifts(self) -> np.ndarray:
        """(T, 2) float32 frame shifts for a temporal model; an unmeasured shift is 0 (taken as aligned)."""
        return np.array([f.shift or (0.0, 0.0) for f in self.frames], dtype=np.float32)

    def run_key(self, model: str, weights_sha256: str, scale: int, tile: int, halo: int, inference: str) -> StackRunKey:
        reference = self.frames[self.reference]
        return StackRunKey(reference.path, reference.size, reference.mtime, model, weights_sha256, scale, tile, halo,
                           inference, json.dumps(self.to_attrs(), sort_keys=True))


@dataclass(frozen=True)
class StackRunKey(RunKey):
    """A run key that also covers every frame, its order, reading and mask: any change is a new run."""

    stack: str = "{}"


def record_stack(store: TileStore, stack: Stack) -> None:
    """Write the stack into the store's attributes, unless it is there already (a resumed run)."""
    attrs = stack.to_attrs()
    if store.attrs.get("stack") != attrs:
        store.attrs = {**store.attrs, "stack": attrs}
        store.group.attrs["sr_geo"] = store.attrs


def inspect_stack(
    sources: Sequence[str],
    *,
    reference: str | None = None,
    mask: CloudMask | None = None,
    asset: str | None = None,
) -> Stack:
    """Discover, validate and order the frames `sources` name; raise with a one-line reason."""
    refs = _discover(sources, asset)
    scenes = [inspect_scene(ref.href) for ref in refs]
    ref_index = _reference_index(refs, reference)
    ref_scene = scenes[ref_index]
    masks = _mask_paths(sources, refs, mask, asset)
    frames, empty = [], 0
    for ref, scene, mask_path in zip(refs, scenes, masks, strict=True):
        _check_compatible(scene, ref_scene)
        try:
            check_has_valid_pixels(ref.href)
        except InvalidRasterError:
            empty += 1  # a fully masked frame is allowed: it is a missing observation
        acquired, date_source = acquisition_time(ref, scene)
        mask_read = None
        if mask_path is not None:
            mask_scene = inspect_scene(mask_path)
            _check_overlap(mask_scene, ref_scene)
            mask_read = relate(mask_scene.grid, ref_scene.grid, resampling="nearest")
        frames.append(Frame(ref.href, scene.size_bytes, scene.mtime, acquired, date_source,
                            relate(scene.grid, ref_scene.grid), mask_path, mask_read))
    if empty == len(frames):
        raise InvalidRasterError("every pixel of every frame is nodata or masked; there is nothing to super-resolve")
    dated = [f for f in frames if f.acquired]
    if dated and len(dated) < len(frames):
        undated = next(f.path for f in frames if not f.acquired)
        raise InvalidRequestError(
            f"{undated}: no acquisition date (STAC datetime, date tag or a date such as 20190904 in the file name) "
            "while other frames have one; give every frame a date or none"
        )
    order = sorted(range(len(frames)), key=lambda i: frames[i].acquired or "") if dated else list(range(len(frames)))
    frames = measure_shifts(frames, ref_index, ref_scene.grid, mask.invalid if mask else ())
    return Stack(
        frames=tuple(frames[i] for i in order),
        reference=order.index(ref_index),
        scene=ref_scene,
        order="acquisition date" if dated else "as given (no frame has a date)",
        mask_invalid=mask.invalid if mask else (),
    )


def measure_shifts(frames: list[Frame], reference: int, grid: Grid, mask_invalid: Sequence[int]) -> list[Frame]:
    """`frames` with their shift against `frames[reference]` measured on the central `SHIFT_WINDOW`² pixels
    of `grid`, each frame read with its validity as the tiler reads it."""
    height, width = min(grid.height, SHIFT_WINDOW), min(grid.width, SHIFT_WINDOW)
    window = Window((grid.width - width) // 2, (grid.height - height) // 2, width, height)
    views = [_frame_window(frame, grid, window, mask_invalid) for frame in frames]
    ref_data, ref_valid = views[reference]
    return [replace(frame, shift=(0.0, 0.0) if i == reference else estimate_shift(ref_data, data, ref_valid, valid))
            for i, (frame, (data, valid)) in enumerate(zip(frames, views, strict=True))]


def _frame_window(frame: Frame, grid: Grid, window: Window, mask_invalid: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    data, valid = _read_window(frame.path, frame.read, grid, window)
    if frame.mask_path is not None and frame.mask_read is not None:
        valid &= ~np.isin(_read_window(frame.mask_path, frame.mask_read, grid, window)[0][0], mask_invalid)
    return data, valid


def _read_window(path: str, read: GridRead, grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
    opened = open_on_grid(path, read, grid)
    try:
        return read_on_grid(opened[-1], window, read)
    finally:
        for ds in reversed(opened):
            ds.close()


def open_on_grid(path: str, read: GridRead, grid: Grid | None) -> list[rasterio.DatasetReader | WarpedVRT]:
    """The raster and, for a frame to be warped, a WarpedVRT of it on `grid` whose last band is an alpha band
    (its own, warped, when it has one): what the frame covers on the reference grid. Read through the last;
    close them all, last first."""
    opened = [rasterio.open(path)]
    if read.warped:
        opened.append(WarpedVRT(opened[0], crs=grid.crs, transform=grid.transform, width=grid.width,
                                height=grid.height, resampling=Resampling[read.resampling],
                                add_alpha=ColorInterp.alpha not in opened[0].colorinterp))
    return opened


def read_on_grid(
    ds: rasterio.DatasetReader | WarpedVRT, window: Window, read: GridRead
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and validity of reference-grid `window`; what the raster does not cover is 0 and invalid."""
    if read.warped:  # the frame's data bands, valid where the VRT's alpha (the frame's mask where it covers) is
        data = ds.read(data_bands(ds.src_dataset), window=window)
        return data, finite(data, ds.read(ds.count, window=window) > 0)
    height, width = int(window.height), int(window.width)
    row, col = int(window.row_off) + read.row, int(window.col_off) + read.col
    if row >= ds.height or col >= ds.width or row + height <= 0 or col + width <= 0:
        return np.zeros((len(data_bands(ds)), height, width), dtype=ds.dtypes[0]), np.zeros((height, width), dtype=bool)
    inside, pads = intersect(Window(col, row, width, height), ds.height, ds.width)
    data, valid = read_valid(ds, inside)
    return np.pad(data, ((0, 0), *pads)), np.pad(valid, pads)


def names_a_stack(sources: Sequence[str]) -> bool:
    """Whether `sources` name a time stack rather than one raster file: several sources, or one that
    names many rasters to `discover` (a folder, a glob, a STAC JSON)."""
    if len(sources) != 1:
        return True
    source = sources[0]
    if source.lower().endswith(".json") or is_glob(source):
        return True
    fs, path = fsspec.core.url_to_fs(source)
    return fs.isdir(path)


def parse_mask_values(text: str) -> tuple[int, ...]:
    """`--mask-values 3,8,9,10` as integers; one-line refusal otherwise."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidRequestError(f"--mask-values {text}: expected integers, e.g. 3,8,9,10") from None


def clearest_frame(valid_counts: np.ndarray) -> int:
    """Index of the frame with the most valid pixels, the earliest on ties: what single-image models see."""
    return int(np.argmax(valid_counts))


def valid_fractions(stack: Stack, max_side: int = VALID_SAMPLE_SIDE) -> tuple[float, ...]:
    """The fraction of the reference grid each frame observes, as the tiler will see it: the frame's own
    mask and finite values, what it covers of the reference, and its cloud mask. Sampled at most
    `max_side` pixels a side.
    """
    grid = stack.scene.grid
    shape = (min(grid.height, max_side), min(grid.width, max_side))
    fractions = []
    for frame in stack.frames:
        with _sampled(frame.path, frame.read, grid, shape) as (ds, vrt):
            valid = finite(vrt.read(data_bands(ds)), vrt.read(vrt.count) > 0)
        if frame.mask_path is not None and frame.mask_read is not None:
            with _sampled(frame.mask_path, frame.mask_read, grid, shape) as (_, vrt):
                valid &= ~np.isin(vrt.read(1), stack.mask_invalid)
        fractions.append(float(valid.mean()))
    return tuple(fractions)


@contextmanager
def _sampled(path: str, read: GridRead, grid: Grid, shape: tuple[int, int]) -> Iterator[tuple]:
    """Raster `path` and a WarpedVRT of it on reference `grid` resampled to `shape`, as the tiler reads warped
    frames: the VRT's last band is the frame's own mask (GDAL's dataset mask) where the frame covers the grid,
    0 elsewhere. Frames the tiler reads by window are sampled by nearest neighbour, so at full size this is
    exactly what the tiler reads."""
    transform = grid.transform * Affine.scale(grid.width / shape[1], grid.height / shape[0])
    with rasterio.open(path) as ds, WarpedVRT(ds, crs=grid.crs, transform=transform, width=shape[1], height=shape[0],
                                              resampling=Resampling[read.resampling],
                                              add_alpha=ColorInterp.alpha not in ds.colorinterp) as vrt:
        yield ds, vrt


def relate(grid: Grid, reference: Grid, resampling: str | None = None) -> GridRead:
    """`read` when `grid` shares the reference's pixel lattice, else `warp` with `resampling`
    (default: cubic, or average for a grid finer than the reference)."""
    if CRS.from_wkt(grid.crs) == CRS.from_wkt(reference.crs):
        t, r = grid.transform, reference.transform
        if abs(t.a - r.a) <= PIXEL_SIZE_RTOL * abs(r.a) and abs(t.e - r.e) <= PIXEL_SIZE_RTOL * abs(r.e):
            col, row = (r.c - t.c) / t.a, (r.f - t.f) / t.e
            if abs(col - round(col)) <= LATTICE_TOLERANCE_PX and abs(row - round(row)) <= LATTICE_TOLERANCE_PX:
                return GridRead("read", row=round(row), col=round(col))
    if resampling is None:
        native, _, _ = calculate_default_transform(grid.crs, reference.crs, grid.width, grid.height, *grid.bounds)
        finer = abs(native.a) < abs(reference.transform.a) * 0.99 and abs(native.e) < abs(reference.transform.e) * 0.99
        resampling = "average" if finer else "cubic"
    return GridRead("warp", resampling=resampling)


def acquisition_time(ref: SourceRef, scene: SceneInfo) -> tuple[str | None, str]:
    """The frame's acquisition time as ISO 8601 UTC and where it came from ('none' when unknown)."""
    if ref.datetime:
        return _iso(dt.datetime.fromisoformat(ref.datetime)), "STAC datetime"
    with rasterio.open(ref.href) as ds:
        tags = {k.upper(): v for ns in (None, "IMAGERY") for k, v in ds.tags(ns=ns).items()}
    for tag in DATE_TAGS:
        when = parse_date(tags.get(tag, ""))
        if when:
            return _iso(when), f"tag {tag}"
    stem = PurePosixPath(ref.href).stem
    when = parse_date(stem) or (dt.datetime(int(stem), 1, 1) if re.fullmatch(r"(19|20)\d\d", stem) else None)
    return (_iso(when), "file name") if when else (None, "none")


def parse_date(text: str) -> dt.datetime | None:
    """The first valid date (and time, if given) in `text`: 20190904, 2019-09-04T10:30:00, 2019:09:04 10:30:00."""
    for match in _DATE.finditer(text):
        year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
        if not 1900 <= year <= 2100:
            continue
        try:
            return dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            continue
    return None


def _iso(when: dt.datetime) -> str:
    """UTC ISO 8601; a time without a zone is taken as UTC (acquisition times are)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat()


def _discover(sources: Sequence[str], asset: str | None) -> list[SourceRef]:
    if not sources:
        raise InvalidRequestError("no frames given")
    refs: dict[str, SourceRef] = {}
    for source in sources:
        found = discover(source, asset=asset)
        if found.rejected:
            raise InvalidRequestError(f"{source}: {found.rejected[0].name}: {found.rejected[0].reason}")
        if not found.refs:
            raise InvalidRequestError(f"{source}: names no raster")
        for ref in found.refs:
            refs.setdefault(os.path.abspath(ref.href) if "://" not in ref.href else ref.href, ref)
    return list(refs.values())


def _reference_index(refs: list[SourceRef], reference: str | None) -> int:
    if reference is None:
        return 0
    wanted = os.path.abspath(reference) if "://" not in reference else reference
    for i, ref in enumerate(refs):
        if (os.path.abspath(ref.href) if "://" not in ref.href else ref.href) == wanted:
            return i
    raise InvalidRequestError(f"--reference {reference}: not one of the frames")


def _mask_paths(sources: Sequence[str], refs: list[SourceRef], mask: CloudMask | None,
                asset: str | None) -> list[str | None]:
    if mask is None:
        return [None] * len(refs)
    key = mask.asset_key
    if key is None:
        paths = [mask.path_for(ref.href) for ref in refs]
        for path in paths:
            if "://" not in path and not os.path.isfile(path):
                raise InvalidRequestError(f"{path}: mask raster not found (from --mask {mask.source})")
        return paths
    if asset is None:
        raise InvalidRequestError(f"--mask asset:{key} needs --asset, the key of the items' image asset")
    masks: dict[str, str] = {}
    for source in sources:  # one image and one mask per item, discovered in the same item order
        images, found = discover(source, asset=asset), discover(source, asset=key)
        if found.rejected or len(found.refs) != len(images.refs):
            raise InvalidRequestError(f"{source}: not every item has a {key!r} asset for --mask asset:{key}")
        masks.update({image.href: mask.href for image, mask in zip(images.refs, found.refs, strict=True)})
    return [masks[ref.href] for ref in refs]


def _check_compatible(scene: SceneInfo, reference: SceneInfo) -> None:
    if scene.count != reference.count:
        raise InvalidRequestError(
            f"{scene.path}: has {_bands(scene.count)}, the reference frame {reference.path} has "
            f"{_bands(reference.count)}; every frame needs the same bands"
        )
    if scene.dtype != reference.dtype:
        raise InvalidRequestError(
            f"{scene.path}: data type {scene.dtype} differs from the reference frame's ({reference.dtype}); "
            "every frame needs the same radiometry"
        )
    _check_overlap(scene, reference)


def _bands(count: int) -> str:
    return f"{count} band" + ("" if count == 1 else "s")


def _check_overlap(scene: SceneInfo, reference: SceneInfo) -> None:
    left, bottom, right, top = transform_bounds(scene.grid.crs, reference.grid.crs, *scene.grid.bounds, densify_pts=21)
    r_left, r_bottom, r_right, r_top = reference.grid.bounds
    if min(right, r_right) <= max(left, r_left) or min(top, r_top) <= max(bottom, r_bottom):
        raise InvalidRequestError(f"{scene.path}: does not overlap the reference frame {reference.path}")



def validate_stack_request(
    sources: Sequence[str],
    destination: str,
    spec: ModelSpec,
    *,
    reference: str | None = None,
    mask: CloudMask | None = None,
    asset: str | None = None,
) -> Stack:
    """Everything a stack run can be refused for before any work: the frames, the output path, the model."""
    stack = inspect_stack(sources, reference=reference, mask=mask, asset=asset)
    for frame in stack.frames:
        if "://" not in frame.path and os.path.exists(destination) and os.path.samefile(frame.path, destination):
            raise InvalidRequestError(f"{destination}: output path is one of the frames; choose another output path")
    validate_request(stack.frames[stack.reference].path, destination, spec)
    return stack
