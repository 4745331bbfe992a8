"""Where rasters, stores and outputs live: local paths or object-store URLs, behind one set of helpers.

Zarr and fsspec address object stores by URL (`s3://bucket/key`) and take credentials from the
environment or fsspec's configuration; GDAL reads the same URLs through /vsis3/ and the same AWS
variables. The one thing they name differently is a custom endpoint (MinIO, Ceph, a local test
server): botocore reads `AWS_ENDPOINT_URL`, GDAL wants `AWS_S3_ENDPOINT`, `AWS_HTTPS` and path-style
addressing. `configure_gdal` derives GDAL's settings from the botocore one, so a user sets one variable.
Credentials are never copied anywhere but GDAL's own environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import fsspec

REMOTE_PREFIXES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://", "/vsi")


def is_remote(path: str) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


def configure_gdal() -> None:
    """Point GDAL's S3 driver at `AWS_ENDPOINT_URL` (if set), unless GDAL is configured already.

    Process environment rather than a `rasterio.Env`: GDAL reads tiles from dask's worker threads,
    and rasterio's Env options are thread-local.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint or "AWS_S3_ENDPOINT" in os.environ:
        return
    url = urlparse(endpoint)
    os.environ["AWS_S3_ENDPOINT"] = url.netloc
    os.environ.setdefault("AWS_HTTPS", "YES" if url.scheme == "https" else "NO")
    os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")


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
