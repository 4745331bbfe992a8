"""Settings resolve defaults < TOML file < SR_GEO_* environment < CLI flags, with types checked."""

from __future__ import annotations

import dataclasses

import pytest

from sr_geo.config import Config, load_config
from sr_geo.errors import InvalidRequestError


def test_each_layer_overrides_the_one_before(tmp_path):
    file = tmp_path / "sr-geo.toml"
    file.write_text('ray_address = "ray://head:10001"\nbatch_size = 8\nscenes_in_flight = 3\ngpus_per_actor = 0.25\n')
    env = {"SR_GEO_BATCH_SIZE": "16", "SR_GEO_THREADS": "2", "SR_GEO_COMPRESSION": "zstd", "SR_GEO_CONFIG": str(file)}
    config = load_config(env=env, scenes_in_flight=5, gpus_per_actor=None)
    assert config == Config(ray_address="ray://head:10001", batch_size=16, scenes_in_flight=5, threads=2,
                            compression="zstd")
    assert load_config(env={}) == Config()


def test_resolved_settings_pass_down_unchanged(tmp_path):
    """What a CLI or an archive run resolved reaches each scene as it is: with every setting given, neither
    the file nor the environment is read again (here both would change it, and the file is not even TOML)."""
    resolved = Config(actors=2, threads=1, batch_size=3, workdir="/data/work")
    (tmp_path / "other.toml").write_text("not toml [")
    env = {"SR_GEO_CONFIG": str(tmp_path / "other.toml"), "SR_GEO_ACTORS": "7", "SR_GEO_RAY_ADDRESS": "auto"}
    assert load_config(env=env, **dataclasses.asdict(resolved)) == resolved


def test_empty_variable_unsets_an_optional_setting(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('workdir = "s3://bucket/work"\n')
    assert load_config(str(file), env={"SR_GEO_WORKDIR": ""}).workdir is None


@pytest.mark.parametrize(("toml", "env", "fragment"), [
    ("batch = 4\n", {}, "unknown settings batch"),
    ('batch_size = "four"\n', {}, "batch_size must be int"),
    ("", {"SR_GEO_GPUS_PER_ACTOR": "half"}, "SR_GEO_GPUS_PER_ACTOR: gpus_per_actor must be float"),
    ("", {"SR_GEO_SCENES_IN_FLIGHT": "0"}, "scenes_in_flight = 0 is out of range"),
    ('compression = "lzma"\n', {}, "compression = 'lzma' is not one of deflate, zstd"),
    ("", {"SR_GEO_PRECISION": "float16"}, "precision = 'float16' is not one of auto, float32, bfloat16"),
    ("actors = [\n", {}, "not valid TOML"),
])
def test_bad_settings_are_refused_with_the_culprit_named(tmp_path, toml, env, fragment):
    file = tmp_path / "c.toml"
    file.write_text(toml)
    with pytest.raises(InvalidRequestError, match=fragment):
        load_config(str(file), env=env)


@pytest.mark.parametrize(("given", "fragment"), [
    ({"batch": 4}, "unknown settings batch"),
    ({"batch_size": None}, "batch_size must be int, got None"),
    ({"actors": "two"}, "actors must be int"),
])
def test_bad_given_settings_are_refused(given, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        load_config(env={}, **given)


def test_missing_file_is_named():
    with pytest.raises(InvalidRequestError, match="nowhere.toml: configuration file not found"):
        load_config(env={"SR_GEO_CONFIG": "nowhere.toml"})
