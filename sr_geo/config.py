"""Operational settings: where the work runs and how much of it runs at once.

One typed `Config`, resolved from four layers, each overriding the one before it:

1. the defaults below;
2. a TOML file: the path given by `--config` / `SR_GEO_CONFIG` (top-level keys named as the fields);
3. environment variables `SR_GEO_<FIELD>` (e.g. `SR_GEO_SCENES_IN_FLIGHT=4`; an empty value resets an
   optional field to unset);
4. what the caller gives: command-line flags, or the settings a flow was called with.

A caller that gives every setting (a `Config` as a dict, resolved elsewhere) gets exactly that: the
file and environment are read only for settings not given, so settings resolved once by the CLI or
an archive run pass down to each scene unchanged.

Model choices (model, scale, weights, tile, halo) are not settings: they change the output, so they
are arguments of each run and part of its provenance. Settings only change how fast and where.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass

from sr_geo.errors import InvalidRequestError

ENV_PREFIX = "SR_GEO_"
CONFIG_FILE_ENV = "SR_GEO_CONFIG"
# The COG's codec, both lossless, both at level 1. ZSTD writes a Sentinel-2 ×4 output 1.7× faster than
# DEFLATE for 3 % more bytes and reads 1.8× faster, but needs a reader on GDAL ≥ 2.3 (2018) or its
# equivalent; DEFLATE is what every TIFF reader opens, so it is the default.
COMPRESSIONS = ("deflate", "zstd")
# The network's arithmetic. auto: bfloat16 on GPUs (tensor cores; no loss scaling, unlike float16),
# float32 on CPUs, where bfloat16 is fast only on those with native support (Intel AMX, AVX-512 BF16):
# there it ran the CNN 1.8× and the GAN 2.2× faster. Outputs differ from float32 by about 0.01 of a band's std, and
# tiled output from whole-image inference by as much: exact tiling (1e-4) holds in float32.
PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(device_type: str, precision: str = "auto") -> str:
    """`precision` with auto made concrete for a device type ("cpu", "cuda"): the driver sizes a pool by
    it without torch."""
    if precision == "auto":
        return "bfloat16" if device_type == "cuda" else "float32"
    return precision


@dataclass(frozen=True)
class Config:
    """How a run uses the machines; `None` means "let sr-geo decide from what the cluster has"."""

    ray_address: str | None = None  # Ray cluster to join; unset: $RAY_ADDRESS, else a private local Ray
    actors: int | None = None  # predictor actors; unset: one per GPU, else one
    gpus_per_actor: float | None = None  # fractional shares a GPU between actors; unset: 1 when GPUs exist
    threads: int | None = None  # CPU threads per actor; unset: the cluster's CPUs shared between actors
    batch_size: int = 4  # tiles per model call: the tiles in flight per actor
    scenes_in_flight: int = 2  # scenes an archive run processes at once
    scene_retries: int = 1  # reruns of a scene that failed for a reason other than its input
    prefect_api_url: str | None = None  # Prefect server; unset: $PREFECT_API_URL, else an ephemeral one
    workdir: str | None = None  # where run stores live (path or fsspec URL); unset: beside each output
    placement_timeout: float = 600.0  # seconds a pool too big for the cluster waits for it to grow, then fails
    compression: str = "deflate"  # the output COG's codec, one of COMPRESSIONS
    precision: str = "auto"  # the network's arithmetic, one of PRECISIONS

    def __post_init__(self) -> None:
        minimums = {"actors": 1, "gpus_per_actor": 0, "threads": 1, "batch_size": 1, "scenes_in_flight": 1,
                    "scene_retries": 0, "placement_timeout": 0}
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise InvalidRequestError(f"setting {name} = {value} is out of range (minimum {minimum})")
        if self.compression not in COMPRESSIONS:
            raise InvalidRequestError(f"setting compression = {self.compression!r} is not one of {', '.join(COMPRESSIONS)}")
        if self.precision not in PRECISIONS:
            raise InvalidRequestError(f"setting precision = {self.precision!r} is not one of {', '.join(PRECISIONS)}")


SettingValue = str | int | float | None  # the value of a Config field, as flows take settings

_TYPES = typing.get_type_hints(Config)
FIELDS = tuple(field.name for field in dataclasses.fields(Config))


def _base_type(name: str) -> type:
    hint = _TYPES[name]
    if isinstance(hint, types.UnionType):
        return next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _optional(name: str) -> bool:
    return isinstance(_TYPES[name], types.UnionType)


def _coerce(name: str, value: object, origin: str) -> object:
    """Check a TOML value or parse an environment string into the field's type."""
    kind = _base_type(name)
    if value is None and _optional(name):
        return None
    if isinstance(value, str) and kind is not str:
        try:
            value = kind(value)
        except ValueError:
            raise InvalidRequestError(f"{origin}: {name} must be {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidRequestError(f"{origin}: {name} must be {kind.__name__}, got {value!r}")
    return value


def _from_file(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        raise InvalidRequestError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequestError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise InvalidRequestError(f"{path}: unknown settings {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    return {name: _coerce(name, value, path) for name, value in table.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name in FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if raw == "" and _optional(name):
            values[name] = None
        else:
            values[name] = _coerce(name, raw, ENV_PREFIX + name.upper())
    return values


def load_config(file: str | None = None, env: Mapping[str, str] | None = None, **given: object) -> Config:
    """Resolve the settings: defaults < TOML file < SR_GEO_* environment < `given` (flags, flow settings).

    `file` defaults to $SR_GEO_CONFIG. A setting given as None is unset (optional settings only).
    When every setting is given, neither the file nor the environment is read:
    `load_config(**dataclasses.asdict(config)) == config`.
    """
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise InvalidRequestError(f"unknown settings {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    values: dict[str, object] = {}
    if set(given) != set(FIELDS):
        env = os.environ if env is None else env
        file = file or env.get(CONFIG_FILE_ENV)
        values.update(_from_file(file) if file else {})
        values.update(_from_env(env))
    values.update({name: _coerce(name, value, "setting") for name, value in given.items()})
    return Config(**values)
