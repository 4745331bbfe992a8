"""Errors a user can act on.

Every failure caused by the user's input or request is an `SrGeoError`: the CLI prints its message as
one line and exits non-zero, so the message must name the file or option at fault and say what to do.
"""


class SrGeoError(Exception):
    """A problem with the request or the input, reported to the user without a traceback."""


class InvalidRasterError(SrGeoError):
    """The input cannot be read as a georeferenced raster sr-geo supports."""


class InvalidRequestError(SrGeoError):
    """The options asked for cannot be honoured (unknown model, unsupported scale, bad path)."""
