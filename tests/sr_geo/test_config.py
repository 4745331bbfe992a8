"""Settings resolve defaults < TOML file < SR_GEO_* environment < CLI flags, with types checked."""

from __future__ import annotations

import pytest

from sr_geo.config import Config, load_config
from sr_geo.errors import InvalidRequestError


def test_each_layer_overrides_the_one_before(tmp_path):
    file = tmp_path / "sr-geo.toml"
    file.write_text('ray_address = "ray://head:10001"\nbatch_size = 8\nscenes_in_flight = 3\ngpus_per_actor = 0.25\n')
    env = {"SR_GEO_BATCH_SIZE": "16", "SR_GEO_THREADS": "2", "SR_GEO_CONFIG": str(file)}
    config = load_config(env=env, scenes_in_flight=5, batch_size=None)
    assert config == Config(ray_address="ray://head:10001", batch_size=16, scenes_in_flight=5, gpus_per_actor=0.25,
                             threads=2)
    assert load_config(env={}) == Config()


def test_empty_variable_unsets_an_optional_setting(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('workdir = "s3://bucket/work"\n')
    assert load_config(str(file), env={"SR_GEO_WORKDIR": ""}).workdir is None


@pytest.mark.parametrize(("toml", "env", "fragment"), [
    ("batch = 4\n", {}, "unknown settings batch"),
    ('batch_size = "four"\n', {}, "batch_size must be int"),
    ("", {"SR_GEO_GPUS_PER_ACTOR": "half"}, "SR_GEO_GPUS_PER_ACTOR: gpus_per_actor must be float"),
    ("", {"SR_GEO_SCENES_IN_FLIGHT": "0"}, "scenes_in_flight = 0 is out of range"),
    ("actors = [\n", {}, "not valid TOML"),
])
def test_bad_settings_are_refused_with_the_culprit_named(tmp_path, toml, env, fragment):
    file = tmp_path / "c.toml"
    file.write_text(toml)
    with pytest.raises(InvalidRequestError, match=fragment):
        load_config(str(file), env=env)


def test_missing_file_is_named():
    with pytest.raises(InvalidRequestError, match="nowhere.toml: configuration file not found"):
        load_config(env={"SR_GEO_CONFIG": "nowhere.toml"})
