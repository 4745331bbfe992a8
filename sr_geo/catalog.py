"""An archive as sr-geo sees it: which rasters a source names, how they group, where their outputs go,
and which outputs are already current.

A source is a folder (every raster file below it), a glob (every file it matches), one raster file,
or a STAC JSON (Item, ItemCollection, Catalog or Collection: their raster data assets). Listing and
reading go through fsspec, so the same code serves local paths and object-store URLs.

Outputs mirror the source's relative layout under the destination (a folder or an object-store
prefix), always as `.tif` (COG). A time stack fused by a temporal model makes one output, named after
its latest frame.

Idempotence: an output is current when all of these hold, and is then skipped:

- it exists and carries sr-geo provenance tags (read back from the COG, wherever it is stored);
- the manifest (`DEST/.sr-geo/manifest.json`) has an entry for it whose run key equals the COG's
  `SR_GEO_RUN_KEY` tag, i.e. the entry describes that very file;
- the entry's source SHA-256s (one per frame of a stack) equal the sources' SHA-256s now (the
  content, not the path or mtime: a touched or moved input is not redone, an edited one is). Hashing
  reads the whole file, so it is redone only when the size or modification time differs from the
  entry's, as rsync and git do;
- the entry's provenance (model, weights SHA-256, scale, tile, halo, uncertainty, consistent, sensor MTF, as
  requested) equals this run's, and every file the entry lists (the COG and its companions) exists.

Once the COG carries the source's SHA-256 in a tag, the manifest is only a cache of hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import fsspec
import rasterio
from rasterio.errors import RasterioIOError

from sr_geo import storage
from sr_geo.errors import InvalidRequestError, SrGeoError
from sr_geo.grid import Grid
from sr_geo.models.registry import ModelSpec, weights_id
from sr_geo.scene import inspect_scene

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc")
RASTER_MEDIA_TYPES = ("image/tiff", "image/jp2", "application/x-netcdf")
MANIFEST = ".sr-geo/manifest.json"
MANIFEST_FORMAT = "sr-geo-manifest/2"  # /2: a list of sources per output (the frames of a stack)
WORKDIR = ".sr-geo/work"  # the run stores of an archive's scenes, unless a workdir is configured
ITEM_COLLECTION = "item-collection.json"
_MANIFEST_LOCK = threading.Lock()  # one per process: every Manifest on any destination shares it


@dataclass(frozen=True)
class SourceRef:
    """One input raster: where it is, where its output goes, and the STAC item it came from, if any."""

    href: str
    relpath: str  # POSIX path relative to the source; the output mirrors it
    item_href: str | None = None
    datetime: str | None = None  # ISO 8601 acquisition time, when the STAC item gives one

    @property
    def output_relpath(self) -> str:
        return str(PurePosixPath(self.relpath).with_suffix(".tif"))


@dataclass(frozen=True)
class Rejected:
    """An input that will not be processed, with the one-line reason the summary reports."""

    name: str  # the path relative to the source, or `item#asset` for a STAC item without the asset
    reason: str


@dataclass(frozen=True)
class Discovery:
    refs: tuple[SourceRef, ...]
    rejected: tuple[Rejected, ...]
    ignored: tuple[str, ...]  # files in a source folder without a raster suffix


@dataclass(frozen=True)
class Scene:
    """A discovered raster that opened and validated: its grid decides which group it joins."""

    ref: SourceRef
    grid: Grid
    bands: int
    dtype: str


@dataclass(frozen=True)
class SceneGroup:
    """Scenes on one grid: a single scene, or a time stack (several dates of one footprint), oldest first."""

    members: tuple[Scene, ...]

    @property
    def kind(self) -> str:
        return "stack" if len(self.members) > 1 else "single"

    @property
    def id(self) -> str:
        return self.members[0].ref.relpath

    @property
    def latest(self) -> Scene:
        """The member a fused output is named after and takes the grid of: the most recent date."""
        return self.members[-1]

    def singles(self) -> tuple[SceneGroup, ...]:
        """Each member on its own: how a single-image model processes a stack."""
        return tuple(SceneGroup((member,)) for member in self.members)


# -- discovery ---------------------------------------------------------------------------------


def _href(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path GDAL and fsspec both open: plain for local files, with the protocol otherwise."""
    return path if "file" in fs.protocol else fs.unstrip_protocol(path)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hidden(relpath: str) -> bool:
    """Dot-folders hold sr-geo's work stores and manifest, and partial files are dot-files."""
    return any(part.startswith(".") for part in PurePosixPath(relpath).parts)


def _is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def _from_folder(fs: fsspec.AbstractFileSystem, root: str, exclude: str | None) -> Discovery:
    refs, ignored = [], []
    for path in sorted(fs.find(root)):
        relpath = posixpath.relpath(path, root)
        if _hidden(relpath) or (exclude and _within(path, exclude)):
            continue
        if _is_raster_name(path):
            refs.append(SourceRef(_href(fs, path), relpath))
        else:
            ignored.append(relpath)
    return Discovery(tuple(refs), (), tuple(ignored))


def _from_glob(fs: fsspec.AbstractFileSystem, pattern: str, exclude: str | None) -> Discovery:
    """Every file the pattern matches; layout relative to the folder before its first wildcard."""
    magic = min(i for i, char in enumerate(pattern) if char in "*?[")
    base = posixpath.dirname(pattern[:magic])
    paths = [p for p in sorted(fs.glob(pattern)) if fs.isfile(p) and not (exclude and _within(p, exclude))]
    refs = [SourceRef(_href(fs, p), posixpath.relpath(p, base)) for p in paths]
    return Discovery(tuple(r for r in refs if not _hidden(r.relpath)), (), ())


def _is_raster_asset(asset) -> bool:
    roles = asset.roles or ["data"]
    media = (asset.media_type or "").split(";")[0].strip()
    return "data" in roles and (media in RASTER_MEDIA_TYPES or (not media and _is_raster_name(asset.href)))


def _from_stac(source: str, asset_key: str | None) -> Discovery:
    import pystac

    with fsspec.open(source, "r") as handle:
        document = json.load(handle)
    base = posixpath.dirname(source)
    kind = document.get("type")
    if kind == "FeatureCollection":
        items = list(pystac.ItemCollection.from_dict(document, preserve_dict=False))
    elif kind == "Feature":
        items = [pystac.Item.from_dict(document)]
    elif kind in ("Catalog", "Collection"):
        items = list(pystac.read_file(source).get_items(recursive=True))
    else:
        raise InvalidRequestError(f"{source}: not a STAC Item, ItemCollection, Catalog or Collection")
    refs, rejected = [], []
    for item in items:
        item_href = item.get_self_href() or source
        keys = [asset_key] if asset_key else [k for k, a in item.assets.items() if _is_raster_asset(a)]
        for key in keys:
            if key not in item.assets:
                rejected.append(Rejected(f"{item.id}#{key}", f"item {item_href} has no asset {key!r}"))
                continue
            href = item.assets[key].get_absolute_href() or item.assets[key].href
            if "://" not in href and not posixpath.isabs(href):
                href = posixpath.normpath(posixpath.join(base, href))
            inside = "://" not in href and _within(href, base)
            relpath = posixpath.relpath(href, base) if inside else f"{item.id}/{posixpath.basename(href)}"
            when = item.datetime or item.common_metadata.start_datetime
            refs.append(SourceRef(href, relpath, item_href, when.isoformat() if when else None))
    return Discovery(tuple(refs), tuple(rejected), ())


def _without_collisions(found: Discovery) -> Discovery:
    """Two inputs that would write one output (a.tif and a.jp2): the second is refused, not lost."""
    owners: dict[str, SourceRef] = {}
    rejected = list(found.rejected)
    for ref in found.refs:
        first = owners.setdefault(ref.output_relpath, ref)
        if first is not ref:
            rejected.append(Rejected(ref.relpath, f"output {ref.output_relpath} is already made from {first.href}"))
    return Discovery(tuple(owners.values()), tuple(rejected), found.ignored)


def is_glob(source: str) -> bool:
    return any(char in source for char in "*?[")


def check_source(source: str, destination: str | None = None) -> None:
    """Refuse a source that does not exist or lies inside the destination; cheap, so the CLI checks first."""
    fs, path = fsspec.core.url_to_fs(source)
    if not is_glob(source) and not fs.exists(path):
        raise InvalidRequestError(f"{source}: no such file or folder")
    if destination and _within(path, fsspec.core.url_to_fs(destination)[1]):
        raise InvalidRequestError(f"{destination}: the destination contains the source; choose another folder")
    if destination and not storage.is_remote(destination) and os.path.isfile(destination):
        raise InvalidRequestError(f"{destination}: is a file; the destination is a folder")


def discover(source: str, destination: str | None = None, asset: str | None = None) -> Discovery:
    """The rasters `source` names; files under `destination` (outputs of earlier runs) are left out."""
    check_source(source, destination)
    fs, path = fsspec.core.url_to_fs(source)
    exclude = fsspec.core.url_to_fs(destination)[1] if destination else None
    if source.lower().endswith(".json"):
        found = _from_stac(_href(fs, path), asset)
    elif is_glob(source):
        found = _from_glob(fs, path, exclude)
    elif fs.isdir(path):
        found = _from_folder(fs, path, exclude)
    else:
        found = Discovery((SourceRef(_href(fs, path), posixpath.basename(path)),), (), ())
    return _without_collisions(found)


def one_line(exc: BaseException) -> str:
    """The reason a summary shows for a failure: sr-geo's own message, else the exception's first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, SrGeoError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def inspect_all(refs: Iterable[SourceRef], workers: int = 8) -> tuple[tuple[Scene, ...], tuple[Rejected, ...]]:
    """Read and validate every header in parallel (I/O bound); unreadable inputs become `Rejected`."""

    def inspect(ref: SourceRef) -> Scene | Rejected:
        try:
            info = inspect_scene(ref.href)
        except Exception as exc:  # noqa: BLE001 - any reason an input cannot be read is reported, not raised
            return Rejected(ref.relpath, one_line(exc).removeprefix(f"{ref.href}: "))
        return Scene(ref, info.grid, info.count, info.dtype)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(inspect, refs))
    scenes = tuple(r for r in results if isinstance(r, Scene))
    return scenes, tuple(r for r in results if isinstance(r, Rejected))


def group_scenes(scenes: Sequence[Scene]) -> tuple[SceneGroup, ...]:
    """Group scenes on the same grid with the same bands and dtype into time stacks, oldest first."""
    groups: dict[tuple, list[Scene]] = {}
    for scene in scenes:
        groups.setdefault((scene.grid, scene.bands, scene.dtype), []).append(scene)
    ordered = (sorted(members, key=lambda s: (s.ref.datetime or "", s.ref.relpath)) for members in groups.values())
    return tuple(sorted((SceneGroup(tuple(m)) for m in ordered), key=lambda g: g.id))


# -- idempotence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceIdentity:
    """What a source was when an output was made from it: SHA-256 of the content, plus size and
    modification time, which only decide whether the hash must be recomputed."""

    href: str
    size: int
    mtime: float
    sha256: str


def source_identity(href: str, known: SourceIdentity | None = None) -> SourceIdentity:
    """The source's identity; its content is hashed again only if size or mtime differ from `known`."""
    size, mtime = storage.identity(href)
    if known is not None and (known.href, known.size, known.mtime) == (href, size, mtime):
        return known
    digest = hashlib.sha256()
    with fsspec.open(href, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return SourceIdentity(href, size, mtime, digest.hexdigest())


@dataclass(frozen=True)
class Provenance:
    """Everything besides the input's content that determines an output: the model and the run's
    settings as requested. A setting left to its default (halo None) stays None, so the rule that
    resolves it lives in the scene flow alone."""

    model: str
    weights_sha256: str
    scale: int
    tile: int
    halo: int | None
    uncertainty: bool
    consistent: bool
    sensor_mtf: float | None = None  # entries recorded before the option existed used the default

    @classmethod
    def requested(cls, spec: ModelSpec, bands: int, *, tile: int, halo: int | None, uncertainty: bool,
                  consistent: bool, sensor_mtf: float | None) -> Provenance:
        return cls(spec.name, weights_id(spec, bands), spec.scale, tile, halo, uncertainty, consistent, sensor_mtf)


def output_tags(path: str) -> dict[str, str] | None:
    """The output's sr-geo tags, or None when there is no readable output with them."""
    storage.configure_gdal()
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except RasterioIOError:
        return None
    return tags if "SR_GEO_RUN_KEY" in tags else None


@dataclass(frozen=True)
class ManifestEntry:
    """One output's record: the sources it was made from (a stack's frames, oldest first), as what,
    and the files written.

    `run_key` is the COG's SR_GEO_RUN_KEY tag: it ties the entry to that very file. `layers` are the
    files written (the COG and companions such as the uncertainty layer), relative to the destination.
    """

    sources: tuple[SourceIdentity, ...]
    run_key: str
    provenance: Provenance
    layers: tuple[str, ...]

    def known(self, href: str) -> SourceIdentity | None:
        """The recorded identity of the source at `href`, which spares hashing it again if unchanged."""
        return next((source for source in self.sources if source.href == href), None)

    @classmethod
    def from_json(cls, data: dict) -> ManifestEntry:
        return cls(sources=tuple(SourceIdentity(**source) for source in data["sources"]), run_key=data["run_key"],
                   provenance=Provenance(**data["provenance"]), layers=tuple(data["layers"]))


def stale_reason(requested: Provenance, sources: Sequence[SourceIdentity], tags: Mapping[str, str] | None,
                 entry: ManifestEntry | None, missing_layers: Sequence[str] = ()) -> str | None:
    """Why the output must be made (again), or None when it is current and can be skipped.

    `sources` are the identities of its inputs now (one, or a stack's frames); `tags` are the output
    COG's (None: no output); `missing_layers` the entry's files that are gone.
    """
    if tags is None:
        return "new"
    if entry is None or entry.run_key != tags.get("SR_GEO_RUN_KEY"):
        return "output not in the manifest"
    if missing_layers:
        return f"missing {', '.join(missing_layers)}"
    if len(entry.sources) != len(sources):
        return f"frames changed: {len(entry.sources)} → {len(sources)}"
    if [s.sha256 for s in entry.sources] != [s.sha256 for s in sources]:
        return "input changed"
    if entry.provenance != requested:
        recorded = asdict(entry.provenance)
        return f"changed: {', '.join(k for k, v in asdict(requested).items() if recorded[k] != v)}"
    return None


class Manifest:
    """`DEST/.sr-geo/manifest.json`: output relative path → `ManifestEntry`.

    Threads of one process record under one lock; every write re-reads the file and replaces it
    whole, so a reader never sees half a manifest. Two processes on one destination can lose each
    other's latest entries; the only cost is that those scenes are redone on the next run. A manifest
    of another format reads as empty: its outputs are redone once.
    """

    def __init__(self, destination: str) -> None:
        self.path = storage.join(destination, MANIFEST)

    def _read(self) -> dict[str, dict]:
        try:
            with fsspec.open(self.path, "r") as handle:
                document = json.load(handle)
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return document.get("outputs", {}) if document.get("format") == MANIFEST_FORMAT else {}

    def get(self, output_relpath: str) -> ManifestEntry | None:
        entry = self._read().get(output_relpath)
        return ManifestEntry.from_json(entry) if entry else None

    def record(self, output_relpath: str, entry: ManifestEntry) -> None:
        with _MANIFEST_LOCK:
            outputs = {**self._read(), output_relpath: asdict(entry)}
            storage.publish_text(json.dumps({"format": MANIFEST_FORMAT, "outputs": outputs}, indent=1, sort_keys=True),
                         self.path)
