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
import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import zarr
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


def configure_zarr() -> None:
    """Size zarr's thread pool to the cores, unless the user set it (`ZARR_THREADING__MAX_WORKERS`).

    Zarr encodes, decodes and reads local chunks on a pool of its own, by default Python's cores + 4
    threads, and glibc gives each thread a malloc arena that keeps the chunk buffers it freed: the
    pool's size, not the scene's, set how far a process grew. Exporting a 67-megapixel output on 2
    cores peaked at 375–388 MiB with 6 threads and 258–275 MiB with 2, in the same time (6.0–6.4 s
    against 6.1–6.2 s). Zarr reads the setting when its pool is first needed, so later calls change
    nothing in a process that used zarr before.
    """
    if zarr.config.get("threading.max_workers", None) is None:
        zarr.config.set({"threading.max_workers": os.cpu_count() or 1})


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


def publish_text(text: str, path: str) -> None:
    """Write a small file (local or on an object store) so that readers see the old one or the new one,
    never half of one: written beside it and renamed locally, uploaded in one request remotely."""
    directory = Path(tempfile.gettempdir() if is_remote(path) else parent(path))
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{posixpath.basename(path)}.{os.getpid()}.{threading.get_ident()}.partial"
    partial.write_text(text)
    publish(partial, path)


def scratch_dir(workdir: str) -> tempfile.TemporaryDirectory:
    """A local directory for intermediate files: inside the work dir when local, else in the system temp."""
    return tempfile.TemporaryDirectory(prefix="sr-geo-", dir=None if is_remote(workdir) else workdir)


_held: set[str] = set()  # lock paths this process holds (locks are re-entrant within a process)

# A killed run's lease on an object-store output expires this long after its last renewal.
LEASE_SECONDS = 120.0


@contextmanager
def output_lock(destination: str) -> Iterator[None]:
    """Exclusive claim on an output path for one run; a second concurrent run fails at once, in one line.

    Two runs of one scene and output share a run store: the first to finish would delete it under
    the other. Re-entrant within a process (the CLI takes it before the flow starts, so the loser
    fails in one line; the flow takes it again for deployments and archives). A killed holder never
    blocks its rerun for long: local locks are flocks, which the kernel releases; object stores have
    none, so there the claim is a lease object (see `_object_lease`).
    """
    target = destination if is_remote(destination) else str(Path(destination).resolve())
    path = join(parent(target), f".{posixpath.basename(target)}.sr-geo.lock")
    if path in _held:
        yield
        return
    with _object_lease(path, destination) if is_remote(path) else _flock(path, destination):
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)


def _busy(destination: str, detail: str = "") -> InvalidRequestError:
    return InvalidRequestError(
        f"{destination}: another sr-geo run is writing this output right now{detail}; wait for it to finish")


@contextmanager
def _flock(path: str, destination: str) -> Iterator[None]:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        raise InvalidRequestError(f"{destination}: cannot write beside the output ({exc.strerror})") from None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(destination) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # still the file on disk, not one a finishing holder just unlinked
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.unlink(path)  # unlink while holding, then release: waiters re-check the inode
        os.close(fd)


@contextmanager
def _object_lease(path: str, destination: str) -> Iterator[None]:
    """A lock object created only if absent (S3 conditional write, If-None-Match), renewed by a
    heartbeat while the run lasts (If-Match on its own version) and deleted at the end. A lease not
    renewed for LEASE_SECONDS (its holder was killed) is taken over, again only if unchanged since read."""
    fs, key = fsspec.core.url_to_fs(path)
    owner = f"{os.uname().nodename}:{os.getpid()}:{threading.get_ident()}"

    def body() -> bytes:
        return json.dumps({"owner": owner, "expires": time.time() + LEASE_SECONDS}).encode()

    try:
        etag = fs.pipe_file(key, body(), mode="create")["ETag"]
    except FileExistsError:
        try:
            held = fs.info(key, refresh=True)
            remaining = json.loads(fs.cat_file(key))["expires"] - time.time()
        except (FileNotFoundError, ValueError, KeyError):
            raise _busy(destination) from None  # released or replaced meanwhile: let the caller retry
        if remaining > 0:
            raise _busy(destination, f" (its lease runs {remaining:.0f} s more unless renewed)") from None
        try:
            etag = fs.pipe_file(key, body(), IfMatch=held["ETag"])["ETag"]
        except OSError:
            raise _busy(destination) from None
    except Exception as exc:  # no credentials, no such bucket, an endpoint that refuses: botocore's own types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidRequestError(f"{destination}: cannot write to the object store ({reason})") from None
    stop = threading.Event()

    def renew() -> None:
        nonlocal etag
        while not stop.wait(LEASE_SECONDS / 4):
            try:
                etag = fs.pipe_file(key, body(), IfMatch=etag)["ETag"]
            except OSError:
                return  # taken over after a missed renewal: the other run now owns the output
    heartbeat = threading.Thread(target=renew, name=f"lease {path}", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        try:
            if fs.info(key, refresh=True)["ETag"] == etag:
                fs.rm_file(key)
        except FileNotFoundError:
            pass
