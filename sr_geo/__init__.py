"""sr-geo: super-resolution of georeferenced rasters at archive scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sr-geo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
