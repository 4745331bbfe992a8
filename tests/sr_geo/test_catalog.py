"""Discovery, grouping and the skip decision, on small files made here."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from conftest import UTM_TRANSFORM, write_raster
from sr_geo.catalog import (
    Manifest,
    ManifestEntry,
    Provenance,
    SourceIdentity,
    SourceRef,
    check_source,
    discover,
    group_scenes,
    inspect_all,
    source_identity,
    stale_reason,
)
from sr_geo.errors import InvalidRequestError
from sr_geo.models.registry import ModelSpec

PROVENANCE = Provenance("bicubic", "none", 2, 256, None, False, False)


def _raster(path: Path, seed: int = 0, shape=(2, 12, 10), dx: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(1, 1000, shape).astype("uint16")
    return write_raster(path, data, transform=UTM_TRANSFORM * Affine.translation(dx, 0))


def test_folder_discovery_mirrors_layout_and_leaves_out_outputs_and_work_dirs(tmp_path):
    src = tmp_path / "src"
    _raster(src / "a.TIF")
    _raster(src / "2024" / "b.tif")
    _raster(src / ".sr-geo" / "work" / "hidden.tif")
    _raster(src / "out" / "old-output.tif")
    (src / "readme.txt").write_text("notes")
    found = discover(str(src), destination=str(src / "out"))
    assert [r.relpath for r in found.refs] == ["2024/b.tif", "a.TIF"]
    assert [r.output_relpath for r in found.refs] == ["2024/b.tif", "a.tif"]
    assert found.refs[0].href == str(src / "2024" / "b.tif")
    assert found.ignored == ("readme.txt",)


def test_glob_discovery_is_relative_to_the_folder_before_the_wildcard(tmp_path):
    _raster(tmp_path / "src" / "x" / "a.tif")
    _raster(tmp_path / "src" / "y" / "b.tif")
    (tmp_path / "src" / "y" / "c.txt").write_text("")
    found = discover(str(tmp_path / "src" / "*" / "*.tif"))
    assert [r.relpath for r in found.refs] == ["x/a.tif", "y/b.tif"]


def test_stac_item_collection_names_its_raster_assets(tmp_path):
    _raster(tmp_path / "scenes" / "a.tif")
    item = {
        "type": "Feature", "stac_version": "1.1.0", "id": "S2A_1", "geometry": None, "links": [],
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "assets": {
            "visual": {"href": "scenes/a.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]},
            "thumb": {"href": "scenes/a.png", "type": "image/png", "roles": ["thumbnail"]},
            "remote": {"href": "https://example.com/x/b.tif", "type": "image/tiff", "roles": ["data"]},
        },
    }
    catalog = tmp_path / "items.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    found = discover(str(catalog))
    assert [(r.href, r.relpath) for r in found.refs] == [
        (str(tmp_path / "scenes" / "a.tif"), "scenes/a.tif"), ("https://example.com/x/b.tif", "S2A_1/b.tif")]
    assert found.refs[0].datetime.startswith("2024-05-01T10:00:00") and found.refs[0].item_href == str(catalog)
    only = discover(str(catalog), asset="thumb")
    assert [r.relpath for r in only.refs] == ["scenes/a.png"]
    missing = discover(str(catalog), asset="B08")
    assert [(r.name, r.reason) for r in missing.rejected] == [("S2A_1#B08", f"item {catalog} has no asset 'B08'")]


def test_two_inputs_for_one_output_are_refused_not_lost(tmp_path):
    _raster(tmp_path / "a.tif")
    _raster(tmp_path / "a.tiff")
    found = discover(str(tmp_path))
    assert [r.relpath for r in found.refs] == ["a.tif"]
    assert found.rejected[0].name == "a.tiff" and "already made from" in found.rejected[0].reason


def test_missing_source_and_destination_around_source_are_refused(tmp_path):
    with pytest.raises(InvalidRequestError, match="no such file or folder"):
        check_source(str(tmp_path / "nope"))
    (tmp_path / "in").mkdir()
    with pytest.raises(InvalidRequestError, match="contains the source"):
        discover(str(tmp_path / "in"), destination=str(tmp_path))
    (tmp_path / "out.tif").write_text("")
    with pytest.raises(InvalidRequestError, match="out.tif: is a file"):
        check_source(str(tmp_path / "in"), str(tmp_path / "out.tif"))


def test_same_grid_scenes_form_a_time_stack_oldest_first(tmp_path):
    refs = [
        SourceRef(str(_raster(tmp_path / "t" / "may.tif", seed=1)), "t/may.tif", datetime="2024-05-01T00:00:00"),
        SourceRef(str(_raster(tmp_path / "t" / "jan.tif", seed=2)), "t/jan.tif", datetime="2024-01-01T00:00:00"),
        SourceRef(str(_raster(tmp_path / "other.tif", dx=500)), "other.tif"),
        SourceRef(str(_raster(tmp_path / "bands.tif", shape=(3, 12, 10))), "bands.tif"),
    ]
    (tmp_path / "bad.tif").write_text("not a raster")
    scenes, rejected = inspect_all([*refs, SourceRef(str(tmp_path / "bad.tif"), "bad.tif")])
    groups = group_scenes(scenes)
    assert [(g.kind, [m.ref.relpath for m in g.members]) for g in groups] == [
        ("single", ["bands.tif"]), ("single", ["other.tif"]), ("stack", ["t/jan.tif", "t/may.tif"])]
    assert [r.name for r in rejected] == ["bad.tif"] and rejected[0].reason.startswith("not a readable raster")


def test_source_identity_hashes_content_and_rehashes_only_after_a_change(tmp_path):
    path = _raster(tmp_path / "a.tif")
    first = source_identity(str(path))
    fake = SourceIdentity(str(path), first.size, first.mtime, "cached")
    assert source_identity(str(path), known=fake) is fake  # same size and mtime: the hash is not recomputed
    os.utime(path, (1e9, 1e9))
    touched = source_identity(str(path), known=fake)
    assert touched.sha256 == first.sha256 and touched.mtime == 1e9
    _raster(path, seed=9)
    assert source_identity(str(path), known=first).sha256 != first.sha256
    moved = tmp_path / "b.tif"
    path.rename(moved)
    assert source_identity(str(moved), known=first).href == str(moved)  # another file: hashed, not taken


def test_output_is_current_only_when_input_content_and_requested_settings_match():
    wanted = Provenance("cnn", "w1", 4, 256, None, False, False)
    identity = (SourceIdentity("in.tif", 10, 1.0, "abc"),)
    entry = ManifestEntry(identity, "k1", wanted, ("a.tif",))
    tags = {"SR_GEO_RUN_KEY": "k1"}
    assert stale_reason(wanted, identity, tags, entry) is None
    assert stale_reason(wanted, (SourceIdentity("moved/in.tif", 10, 5.0, "abc"),), tags, entry) is None
    assert stale_reason(wanted, identity, None, entry) == "new"
    assert stale_reason(wanted, identity, {"SR_GEO_RUN_KEY": "k2"}, entry) == "output not in the manifest"
    assert stale_reason(wanted, identity, tags, None) == "output not in the manifest"
    assert stale_reason(wanted, identity, tags, entry, ["a_uncertainty.tif"]) == "missing a_uncertainty.tif"
    assert stale_reason(wanted, (SourceIdentity("in.tif", 10, 2.0, "abd"),), tags, entry) == "input changed"
    other = Provenance("cnn", "w2", 4, 128, None, False, True)
    assert stale_reason(other, identity, tags, entry) == "changed: weights_sha256, tile, consistent"
    assumed = Provenance("cnn", "w1", 4, 256, None, False, False, sensor_mtf=0.25)
    assert stale_reason(assumed, identity, tags, entry) == "changed: sensor_mtf"
    recorded = asdict(entry)
    del recorded["provenance"]["sensor_mtf"]  # as written before the option existed
    assert stale_reason(wanted, identity, tags, ManifestEntry.from_json(recorded)) is None


def test_a_fused_stack_is_current_only_while_every_frame_is():
    wanted = Provenance("rnn", "w", 4, 256, None, False, False)
    frames = tuple(SourceIdentity(f"t/{i}.tif", 10, 1.0, f"h{i}") for i in range(3))
    entry = ManifestEntry(frames, "k", wanted, ("t/2.tif",))
    tags = {"SR_GEO_RUN_KEY": "k"}
    assert stale_reason(wanted, frames, tags, entry) is None
    edited = (*frames[:1], SourceIdentity("t/1.tif", 11, 2.0, "new"), frames[2])
    assert stale_reason(wanted, edited, tags, entry) == "input changed"
    assert stale_reason(wanted, frames[1:], tags, entry) == "frames changed: 3 → 2"
    assert entry.known("t/1.tif") == frames[1] and entry.known("t/9.tif") is None


def test_requested_provenance_hashes_the_weights_that_will_run(random_cnn_weights):
    spec = ModelSpec("cnn", 2, str(random_cnn_weights(scale=2)))
    requested = Provenance.requested(spec, 3, tile=64, halo=None, uncertainty=True, consistent=False, sensor_mtf=None)
    assert requested.weights_sha256 == hashlib.sha256(Path(spec.weights).read_bytes()).hexdigest()
    assert Provenance.requested(ModelSpec("bicubic", 2), 3, tile=64, halo=2, uncertainty=False,
                                consistent=False, sensor_mtf=None).weights_sha256 == "none"


def _entry(i: int) -> ManifestEntry:
    return ManifestEntry((SourceIdentity(f"in/{i}.tif", i, 0.0, "h"),), f"k{i}", PROVENANCE, (f"s/{i}.tif",))


def test_manifest_keeps_every_entry_under_concurrent_records(tmp_path):
    manifest = Manifest(str(tmp_path))

    def record(i: int) -> None:
        Manifest(str(tmp_path)).record(f"s/{i}.tif", _entry(i))

    threads = [threading.Thread(target=record, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert manifest.get("s/7.tif") == _entry(7)
    assert len(json.loads(Path(manifest.path).read_text())["outputs"]) == 16
    assert manifest.get("s/99.tif") is None
    assert [p.name for p in (tmp_path / ".sr-geo").iterdir()] == ["manifest.json"]  # no partial file left


def test_manifest_of_another_format_reads_as_empty(tmp_path):
    """Outputs listed by an older manifest are redone once, never misread."""
    (tmp_path / ".sr-geo").mkdir()
    (tmp_path / ".sr-geo" / "manifest.json").write_text(json.dumps(
        {"format": "sr-geo-manifest/1", "outputs": {"a.tif": {"source": "in/a.tif", "size": 1}}}))
    assert Manifest(str(tmp_path)).get("a.tif") is None
