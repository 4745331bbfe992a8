"""The archive flow for real (local Ray, real Prefect server): good scenes finish, bad ones are
reported, a transient failure is retried, scenes in flight are bounded, the run's settings reach every
scene, a rerun skips what is current and redoes what changed, and a temporal model fuses time stacks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine

import flows.archive
from conftest import UTM_TRANSFORM, smooth_texture, write_raster
from flows.archive import super_resolve_archive
from sr_geo.catalog import Manifest
from sr_geo.config import FIELDS, Config
from sr_geo.hardware import cpu_description

pytestmark = pytest.mark.slow
GOOD = ["a.tif", "t/2024-01.tif", "t/2024-02.tif"]
BAD = {"allnodata.tif": "every pixel is nodata", "corrupt.tif": "not a readable raster",
       "notes.tif": "not a readable raster", "truncated.tif": "pixel data cannot be read"}


def _scene(path: Path, seed: int, dx: float = 0.0, shape=(2, 40, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (1 + smooth_texture(shape, seed) * 1000).astype("uint16")
    return write_raster(path, data, transform=UTM_TRANSFORM * Affine.translation(dx, 0))


def _make_archive(src: Path) -> None:
    _scene(src / "a.tif", 0)
    _scene(src / "t" / "2024-01.tif", 2, dx=2000, shape=(2, 30, 30))
    _scene(src / "t" / "2024-02.tif", 3, dx=2000, shape=(2, 30, 30))
    write_raster(src / "allnodata.tif", np.zeros((2, 20, 20), "uint16"), nodata=0)
    (src / "corrupt.tif").write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    whole = _scene(src.parent / "whole.tif", 4, shape=(3, 300, 300))
    (src / "truncated.tif").write_bytes(whole.read_bytes()[:40_000])
    (src / "notes.tif").write_text("not a raster\n")
    (src / "readme.txt").write_text("field notes\n")


class _Observed:
    """Wraps the scene flow: counts scenes in flight and fails `a.tif` once, as a flaky node would."""

    def __init__(self, real) -> None:
        self.real, self.lock = real, threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.calls: list[str] = []
        self.kwargs: list[dict] = []

    def __call__(self, source: str, destination: str, **kwargs) -> dict:
        with self.lock:
            self.calls.append(source)
            self.kwargs.append(kwargs)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            flaky = source.endswith("/a.tif") and self.calls.count(source) == 1
        try:
            if flaky:
                raise RuntimeError("connection to node lost")
            return self.real(source, destination, **kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_cluster, prefect_harness):
    root = tmp_path_factory.mktemp("archive")
    src, dest = root / "src", root / "dest"
    _make_archive(src)
    observed = _Observed(flows.archive.super_resolve_scene)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flows.archive, "super_resolve_scene", observed)
        summary = super_resolve_archive(str(src), str(dest), model="bicubic", scale=2, tile=32,
                                        scenes_in_flight=2, scene_retries=1, batch_size=3)
    return src, dest, summary, observed


def _rows(summary: dict) -> dict[str, dict]:
    return {row["scene"]: row for row in summary["scenes"]}


def test_good_scenes_finish_and_bad_ones_are_reported_one_line_each(first_run):
    src, dest, summary, _ = first_run
    rows = _rows(summary)
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 4}
    assert {name for name, row in rows.items() if row["status"] == "done"} == set(GOOD)
    for name, fragment in BAD.items():
        assert rows[name]["status"] == "failed" and fragment in rows[name]["reason"], rows[name]
    assert len(summary["failed"]) == 4 and all("\n" not in line for line in summary["failed"])
    assert summary["ignored"] == ["readme.txt"]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.tif")) == sorted(GOOD)
    assert not list((dest / ".sr-geo" / "work").iterdir())  # stores are removed after success
    for name in GOOD:
        with rasterio.open(src / name) as inp, rasterio.open(dest / name) as out:
            assert out.bounds == inp.bounds and out.res == (5.0, 5.0)
            assert out.tags()["SR_GEO_SOURCE"] == Path(name).name


def test_settings_are_resolved_once_and_reach_every_scene(first_run):
    """Each scene gets every setting as the archive resolved it, and its pool runs with them."""
    from prefect.artifacts import Artifact

    _, dest, _, observed = first_run
    settings = {key: observed.kwargs[0][key] for key in FIELDS}
    assert settings == {**dataclasses.asdict(Config()), "batch_size": 3, "scenes_in_flight": 2,
                        "workdir": str(dest / ".sr-geo" / "work")}
    assert all({key: kwargs[key] for key in FIELDS} == settings for kwargs in observed.kwargs)
    assert (f"1 actor × 2 threads on {cpu_description()} in float32, batches of 3 tiles"
            in Artifact.get("sr-geo-scene-report").data)


def test_time_stack_is_recorded_and_each_date_processed(first_run):
    _, _, summary, _ = first_run
    assert summary["stacks_fused"] is False
    stacks = [g for g in summary["groups"] if g["kind"] == "stack"]
    assert stacks == [{"id": "t/2024-01.tif", "kind": "stack", "members": ["t/2024-01.tif", "t/2024-02.tif"]}]
    assert _rows(summary)["t/2024-02.tif"]["group"] == "t/2024-01.tif"


def test_transient_failure_is_retried_and_scenes_in_flight_are_bounded(first_run):
    src, _, summary, observed = first_run
    assert _rows(summary)["a.tif"]["status"] == "done"
    assert observed.calls.count(str(src / "a.tif")) == 2
    assert observed.max_in_flight == 2


def test_item_collection_describes_the_real_outputs(first_run):
    src, dest, summary, _ = first_run
    items = {item.id: item for item in pystac.ItemCollection.from_file(summary["item_collection"])}
    assert sorted(items) == ["a", "t-2024-01", "t-2024-02"]
    item = items["t-2024-02"]
    with rasterio.open(dest / "t" / "2024-02.tif") as out:
        assert item.properties["proj:code"] == "EPSG:32618"
        assert item.properties["proj:shape"] == [out.height, out.width]
        assert item.properties["proj:transform"] == list(out.transform)[:6]
        assert item.properties["proj:bbox"] == list(out.bounds)
    bands = item.assets["data"].extra_fields["raster:bands"]
    assert [(b["data_type"], b["spatial_resolution"]) for b in bands] == [("uint16", 5.0)] * 2
    assert item.assets["data"].href == str(dest / "t" / "2024-02.tif")
    source = src / "t" / "2024-02.tif"
    assert item.properties["sr_geo:source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    west, south, east, north = item.bbox
    assert -76 < west < east < -75 and 37 < south < north < 38  # UTM 18N near Chincoteague


def test_table_artifact_has_a_row_per_input(first_run):
    from prefect.artifacts import Artifact

    artifact = Artifact.get("sr-geo-archive")
    table = json.loads(artifact.data)
    assert sorted(row["scene"] for row in table) == sorted([*GOOD, *BAD])
    assert {row["status"] for row in table} == {"done", "failed"}


def test_rerun_skips_current_outputs_and_redoes_changed_inputs(first_run):
    src, dest, _, _ = first_run
    os.utime(src / "t" / "2024-01.tif", (1e9, 1e9))  # touched: same content, so still current
    _scene(src / "a.tif", 7)  # new content on the same grid
    before = {name: (dest / name).stat().st_mtime_ns for name in GOOD}
    summary = super_resolve_archive(str(src), str(dest), model="bicubic", scale=2, tile=32, scenes_in_flight=2)
    rows = _rows(summary)
    assert {name: rows[name]["status"] for name in GOOD} == {
        "a.tif": "done", "t/2024-01.tif": "skipped", "t/2024-02.tif": "skipped"}
    assert rows["a.tif"]["reason"] == "input changed"
    assert summary["counts"]["failed"] == 4
    unchanged = [name for name in GOOD if name != "a.tif"]
    assert {name: (dest / name).stat().st_mtime_ns for name in unchanged} == {name: before[name] for name in unchanged}
    assert len(list(pystac.ItemCollection.from_file(summary["item_collection"]))) == 3


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_temporal_model_fuses_each_time_stack_into_one_output(tmp_path):
    """rnn: three dates of one tile become one output, named after and on the grid of the latest date; a
    lone scene is a stack of one. A rerun skips both."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    dates = ["t/20240105.tif", "t/20240205.tif", "t/20240305.tif"]
    for seed, name in enumerate(dates):
        _scene(src / name, seed, shape=(2, 20, 24))
    _scene(src / "lone.tif", 9, dx=3000, shape=(2, 18, 16))
    summary = super_resolve_archive(str(src), str(dest), model="rnn", scale=4, tile=32)
    rows = _rows(summary)
    assert summary["stacks_fused"] is True and summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert {name: (row["frames"], row["group"]) for name, row in rows.items()} == {
        "t/20240305.tif": (3, "t/20240105.tif"), "lone.tif": (1, "lone.tif")}
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.tif")) == ["lone.tif", "t/20240305.tif"]
    with rasterio.open(src / dates[-1]) as inp, rasterio.open(dest / dates[-1]) as out:
        assert out.bounds == inp.bounds and (out.height, out.width) == (80, 96)
        assert out.tags()["SR_GEO_MODEL"] == "rnn"
    entry = Manifest(str(dest)).get(dates[-1])
    assert [s.href for s in entry.sources] == [str(src / name) for name in dates]
    assert [s.sha256 for s in entry.sources] == [hashlib.sha256((src / n).read_bytes()).hexdigest() for n in dates]
    items = {item.id: item for item in pystac.ItemCollection.from_file(summary["item_collection"])}
    assert [f["href"] for f in items["t-20240305"].properties["sr_geo:frames"]] == [str(src / n) for n in dates]
    assert "sr_geo:frames" not in items["lone"].properties

    again = super_resolve_archive(str(src), str(dest), model="rnn", scale=4, tile=32)
    assert again["counts"] == {"done": 0, "skipped": 2, "failed": 0}
