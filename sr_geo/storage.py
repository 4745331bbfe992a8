"""Where rasters, stores and outputs live: local paths or object-store URLs, behind one set of helpers.

Zarr and fsspec address object stores by URL (`s3://bucket/key`) and take credentials from the
environment or fsspec's configuration; GDAL reads the same URLs through /vsis3/ and the same AWS
variables. The one thing they name differently is a custom endpoint (MinIO, Ceph, a local test
server): botocore reads `AWS_ENDPOINT_URL`, GDAL wants `AWS_S3_ENDPOINT`, `AWS_HTTPS` and path-style
addressing. `configure_gdal` derives GDAL's settings from the botocore one, so a user sets one variable.
Credentials are never copied anywhere but GDAL's own environment.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import fsspec
from rasterio.env import get_gdal_config, set_gdal_config

from sr_geo.errors import InvalidRequestError

REMOTE_PREFIXES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://", "/vsi")


def is_remote(path: str) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


# Export, the run report and inspection stream every block once, in order: a small cache serves
# them, and keeps the process flat whatever the scene size. Readers that revisit blocks (tiling:
# neighbouring tiles share source blocks) reserve what they need on top with `gdal_cache_reserve`.
GDAL_CACHE_BYTES = 16 * 2**20

_cache_lock = threading.Lock()
_cache_configured = False
_cache_reserved = 0  # bytes reserved above the configured size by readers running now
_cache_base = 0  # the configured size, read when the first reservation starts


def configure_gdal() -> None:
    """Bound GDAL's block cache, and point its S3 driver at `AWS_ENDPOINT_URL` (if set).

    GDAL's cache defaults to 5 % of RAM and fills as a run reads and writes more of a scene (the COG
    copy of a 67-megapixel output grew the driver by 256 MB with a 256 MB cache): a fixed size keeps
    memory flat. The size is set live, once per process, because GDAL fixes it at its first block
    read, which may come before this call; the cache is process-wide, so dask's threads share it.
    A `GDAL_CACHEMAX` the user set is kept.
    """
    global _cache_configured
    with _cache_lock:
        if not _cache_configured and "GDAL_CACHEMAX" not in os.environ:
            set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_BYTES)
        _cache_configured = True
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or "AWS_S3_ENDPOINT" in os.environ:
        return
    url = urlparse(endpoint)
    os.environ["AWS_S3_ENDPOINT"] = url.netloc
    os.environ.setdefault("AWS_HTTPS", "YES" if url.scheme == "https" else "NO")
    os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")


@contextmanager
def gdal_cache_reserve(nbytes: int) -> Iterator[None]:
    """Grow GDAL's block cache by `nbytes` while the block runs, then give them back.

    The cache is one per process, so reservations add up: concurrent scenes of an archive each get
    theirs, and the cache returns to its configured size when the last one ends.
    """
    global _cache_reserved, _cache_base
    configure_gdal()
    with _cache_lock:
        if _cache_reserved == 0:
            _cache_base = get_gdal_config("GDAL_CACHEMAX")
        _cache_reserved += nbytes
        set_gdal_config("GDAL_CACHEMAX", _cache_base + _cache_reserved)
    try:
        yield
    finally:
        with _cache_lock:
            _cache_reserved -= nbytes
            set_gdal_config("GDAL_CACHEMAX", _cache_base + _cache_reserved)


def identity(path: str) -> tuple[int, float]:
    """(size in bytes, modification time) of a local file or remote object: what keys a resume."""
    if not is_remote(path):
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime
    fs, key = fsspec.core.url_to_fs(path)
    info = fs.info(key)
    modified = info.get("LastModified") or info.get("mtime") or 0
    return int(info.get("size", 0)), modified.timestamp() if hasattr(modified, "timestamp") else float(modified)


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else os.path.join(base, name)


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if is_remote(path) else str(Path(path).resolve().parent)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    fs, key = fsspec.core.url_to_fs(path)
    return fs.exists(key)


def remove_tree(path: str) -> None:
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, key = fsspec.core.url_to_fs(path)
    if fs.exists(key):
        fs.rm(key, recursive=True)


def publish(local: Path, destination: str) -> None:
    """Move a finished local file to `destination` so that it appears whole or not at all.

    Locally a rename in the same directory; on an object store a single upload, which the store
    makes visible only once complete.
    """
    if is_remote(destination):
        fs, key = fsspec.core.url_to_fs(destination)
        fs.put_file(str(local), key)
        local.unlink()
    else:
        os.replace(local, destination)


def scratch_dir(workdir: str) -> tempfile.TemporaryDirectory:
    """A local directory for intermediate files: inside the work dir when local, else in the system temp."""
    return tempfile.TemporaryDirectory(prefix="sr-geo-", dir=None if is_remote(workdir) else workdir)


_held: dict[str, int] = {}  # lock path -> descriptor, for locks this process holds (re-entrant)


@contextmanager
def output_lock(destination: str) -> Iterator[None]:
    """Exclusive claim on a local output path for one run; a second concurrent run fails at once.

    Two runs of one scene share a run store and an output: the first to finish would delete the
    store under the other. flock is released by the kernel even when the holder is SIGKILLed, so a
    killed run never blocks its rerun. Re-entrant within a process (the CLI takes it before the flow
    starts, so the loser fails in one line; the flow takes it again for deployments and archives).
    Object stores have no such primitive: remote outputs are not locked.
    """
    if is_remote(destination):
        yield
        return
    target = Path(destination).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    path = str(target.with_name(f".{target.name}.sr-geo.lock"))
    if path in _held:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InvalidRequestError(
                f"{destination}: another sr-geo run is writing this output right now; wait for it to finish"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # still the file on disk, not one a finishing holder just unlinked
        except FileNotFoundError:
            pass
        os.close(fd)
    _held[path] = fd
    try:
        yield
    finally:
        del _held[path]
        os.unlink(path)  # unlink while holding, then release: waiters re-check the inode
        os.close(fd)
