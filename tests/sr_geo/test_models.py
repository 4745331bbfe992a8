"""The learned architectures: band-agnostic, rebuilt from safetensors alone, and their receptive radii."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from sr_geo.models.bands import BandExchange
from sr_geo.models.cnn import CNN
from sr_geo.models.discriminator import PatchDiscriminator
from sr_geo.models.gan import RRDBNet
from sr_geo.models.header import read_metadata
from sr_geo.models.receptive import SEAM_TOLERANCE, effective_radius
from sr_geo.models.registry import (ARCHITECTURES, CLASSICAL, SCALES, WEIGHTS_DIR, ModelSpec, build_model,
                                    receptive_radius, weights_path)
from sr_geo.models.weights import load_weights, save_weights

SHIPPED = [("cnn", 2), ("cnn", 4), ("gan", 4)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(name: str, scale: int) -> CNN | RRDBNet:
    """A small network of the architecture with its zero-initialised tail randomised, so it is not bicubic."""
    torch.manual_seed(0)
    model = CNN(scale, feats=8, blocks=2) if name == "cnn" else RRDBNet(scale, feats=8, blocks=1, growth=4)
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize(("name", "scale"), SHIPPED)
def test_one_shipped_weights_file_serves_every_band_count(name: str, scale: int) -> None:
    model = build_model(ModelSpec(name, scale), bands=4)
    assert weights_path(ModelSpec(name, scale), 13) == WEIGHTS_DIR / f"{name}_x{scale}.safetensors"
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((1, 13, 12, 12), generator=generator)
    with torch.no_grad():
        for bands in (1, 3, 4, 13):
            y = model(x[:, :bands])
            assert y.shape == (1, bands, 12 * scale, 12 * scale)
            assert torch.isfinite(y).all()
        order = torch.randperm(13, generator=generator)
        torch.testing.assert_close(model(x[:, order]), model(x)[:, order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_registry_says_of_each_model_what_its_class_says(name: str) -> None:
    """The registry knows models without importing them (torch loads later); its entries must agree with the classes."""
    cls = ARCHITECTURES[name].load()
    assert cls.arch == name and cls.temporal is ARCHITECTURES[name].temporal


@pytest.mark.parametrize(("name", "scale"), [(name, scale) for name in CLASSICAL for scale in SCALES] + SHIPPED + [("rnn", 4)])
def test_the_planners_radius_is_the_models_own(name: str, scale: int) -> None:
    """The driver plans the halo from the registry and the weights' header, never building the model."""
    spec = ModelSpec(name, scale)
    assert receptive_radius(spec, 3) == build_model(spec, 3).receptive_radius


@pytest.mark.parametrize(("name", "scale"), SHIPPED)
def test_shipped_weights_carry_their_card(name: str, scale: int) -> None:
    meta = read_metadata(WEIGHTS_DIR / f"{name}_x{scale}.safetensors")
    assert meta["arch"] == name and int(meta["scale"]) == scale
    assert json.loads(meta["config"])["scale"] == scale
    assert {"red", "green", "blue", "nir"} <= set(json.loads(meta["bands_trained"]))
    assert "Copernicus Sentinel" in json.loads(meta["training_data"])["attribution"]
    assert "mtf_nyquist" in json.loads(meta["degradation"])
    assert "standardisation" in meta["normalisation"] and meta["sr_geo_version"]
    validation = json.loads(meta["validation"])
    assert validation["patches"] > 0 and {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(validation)
    assert "CPU" in json.loads(meta["training"])["hardware"]
    assert 0 < int(meta["effective_radius"]) <= int(meta["theoretical_radius"])
    assert float(meta["effective_radius_tolerance"]) == SEAM_TOLERANCE


def test_shipped_effective_radius_bounds_the_influence_of_distant_input() -> None:
    """Content beyond the stored effective radius, changed or cut off, moves the centre by < tolerance."""
    model = build_model(ModelSpec("cnn", 4), bands=3)
    radius, limit, s = model.effective_radius, model.theoretical_radius, model.scale
    generator = torch.Generator().manual_seed(123)  # not the seed the measurement used
    x = torch.randn((2, 3, 2 * limit + 1, 2 * limit + 1), generator=generator) * 2
    other = torch.randn(x.shape, generator=generator) * 2
    rows = torch.arange(2 * limit + 1) - limit
    outside = torch.maximum(rows[:, None].abs(), rows[None, :].abs()) > radius
    centre = slice(limit * s, (limit + 1) * s)
    with torch.no_grad():
        reference = model(x)[..., centre, centre]
        replaced = model(torch.where(outside, other, x))[..., centre, centre]
        cropped = model(x[..., limit - radius : limit + radius + 1, limit - radius : limit + radius + 1])
    assert (replaced - reference).abs().max() < SEAM_TOLERANCE
    assert (cropped[..., radius * s : (radius + 1) * s, radius * s : (radius + 1) * s] - reference).abs().max() < SEAM_TOLERANCE


@pytest.mark.parametrize("name", ["cnn", "gan"])
def test_safetensors_round_trip_rebuilds_an_identical_model(name: str, tmp_path, monkeypatch) -> None:
    model = small(name, 4)
    model.effective_radius = 3
    path = tmp_path / "w.safetensors"
    save_weights(model, path, bands_trained=["red"])
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("weights must load without pickle"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("weights must load without pickle"))
    rebuilt = load_weights(path)
    assert type(rebuilt) is type(model) and rebuilt.config() == model.config()
    assert rebuilt.effective_radius == 3 and rebuilt.theoretical_radius == model.theoretical_radius
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert set(load_file(str(path))) == set(model.state_dict())
    assert json.loads(read_metadata(path)["bands_trained"]) == ["red"]


@pytest.mark.parametrize("name", ["cnn", "gan"])
@pytest.mark.parametrize("scale", [2, 4])
def test_band_agnostic_and_permutation_equivariant(name: str, scale: int) -> None:
    model = small(name, scale)
    x = torch.randn(2, 13, 9, 11)
    with torch.no_grad():
        for bands in (1, 3, 4, 13):
            assert model(x[:, :bands]).shape == (2, bands, 9 * scale, 11 * scale)
        order = torch.randperm(13)
        torch.testing.assert_close(model(x[:, order]), model(x)[:, order], atol=1e-5, rtol=1e-5)
        # The bands do inform each other: changing one band changes the others' outputs.
        changed = x.clone()
        changed[:, 0] += 1
        assert (model(changed)[:, 1:] - model(x)[:, 1:]).abs().max() > 1e-4


def test_untrained_networks_are_bicubic() -> None:
    x = torch.randn(1, 2, 8, 8)
    bicubic = build_model(ModelSpec("bicubic", 4), 2)
    for model in (CNN(4, feats=8, blocks=1), RRDBNet(4, feats=8, blocks=1, growth=4)):
        torch.testing.assert_close(model(x), bicubic(x))


def test_band_exchange_sees_the_band_mean() -> None:
    exchange = BandExchange(2)
    features = torch.randn(3 * 4, 2, 5, 5)  # 3 images of 4 bands
    out = exchange(features, bands=4)
    mean = features.reshape(3, 4, 2, 5, 5).mean(1)
    expected = features.reshape(3, 4, 2, 5, 5) + exchange.proj(mean)[:, None]
    torch.testing.assert_close(out, expected.reshape(features.shape))


@pytest.mark.parametrize("scale", [2, 4])
def test_theoretical_radius_of_the_new_architectures(scale: int) -> None:
    # CNN: head + 2 convs per block + body tail + first upsampling conv = 1 + 2·2 + 1 + 1 = 7 LR px, plus
    # the convolutions at ×2 and ×4 (half and a quarter of an LR pixel each), rounded up: 8.
    assert CNN(scale, feats=4, blocks=2).theoretical_radius == 8
    # GAN: head + 15 convs per RRDB (3 dense blocks × 5) + body tail = 17 LR px, plus the convolutions
    # after each ×2 nearest upsampling and at HR (≤ 1.25 LR px), rounded up: 19.
    assert RRDBNet(scale, feats=4, blocks=1, growth=2).theoretical_radius == 19


def test_effective_radius_is_within_the_theoretical_and_holds() -> None:
    model = small("gan", 2)
    limit = model.theoretical_radius
    radius = effective_radius(model, trials=2)
    assert 0 < radius < limit  # a deep network depends on its far field only negligibly
    assert effective_radius(model, tolerance=0.0, trials=1) == limit
    assert effective_radius(model, tolerance=1e9, trials=1) == 0
    x = torch.randn(1, 3, 2 * limit + 1, 2 * limit + 1, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = model(x)[..., limit * 2 : limit * 2 + 2, limit * 2 : limit * 2 + 2]
        cut = model(x[..., limit - radius : limit + radius + 1, limit - radius : limit + radius + 1])
    assert (cut[..., radius * 2 : radius * 2 + 2, radius * 2 : radius * 2 + 2] - reference).abs().max() < SEAM_TOLERANCE


def test_gan_generator_and_discriminator_shapes() -> None:
    generator = RRDBNet(4)
    assert generator.config() == {"scale": 4, "feats": 32, "blocks": 4, "growth": 16}
    assert sum(p.numel() for p in generator.parameters()) < 1_000_000  # a few MB of float32
    sr = generator(torch.randn(2, 3, 12, 12))
    assert sr.shape == (2, 3, 48, 48)
    discriminator = PatchDiscriminator().eval()  # eval: no power-iteration update between the two calls
    with torch.no_grad():
        logits, features = discriminator(sr)
        permuted, _ = discriminator(sr[:, [2, 0, 1]])
    assert logits.shape == (2 * 3, 1, 6, 6)  # one logit map per band, three stride-2 stages
    assert [f.shape[1:] for f in features] == [(64, 24, 24), (128, 12, 12), (128, 6, 6)]
    torch.testing.assert_close(permuted.reshape(2, 3, 6, 6), logits.reshape(2, 3, 6, 6)[:, [2, 0, 1]])
