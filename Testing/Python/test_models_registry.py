import json

import pytest
import torch
from conftest import tiny_card

from MedGANLogic.errors import ModelError
from MedGANLogic.models import registry
from MedGANLogic.models.card import validate_card


def test_valid_card_passes():
    validate_card(tiny_card())


@pytest.mark.parametrize("field, value, message", [
    ("task", "colorize", "'task'"),
    ("dims", "4d", "'dims'"),
    ("id", "Bad Id!", "'id'"),
    ("slice_axis", 3, "'slice_axis'"),
    ("tile_size", [32], "'tile_size'"),
    ("scale_factor", [2, 1, 1], "'scale_factor'"),
    ("intended_use", "clinical diagnosis", "'intended_use'"),
    ("weights", {"file": "model.pth", "sha256": "0" * 64}, "'weights.file'"),
    ("weights", {"sha256": "xyz"}, "'weights.sha256'"),
    ("input", {"modality": "MR", "normalization": {"kind": "zscore"}}, "'input.normalization.kind'"),
    ("input", {"modality": "MR", "spacing_mm": [3, 1], "normalization": {"kind": "none"}}, "'input.spacing_mm'"),
    ("input", {"modality": "MR", "normalization": {"kind": "ct_window", "window": [100, -100]}},
     "'input.normalization.window'"),
])
def test_bad_card_names_the_field(field, value, message):
    with pytest.raises(ModelError, match=message):
        validate_card(tiny_card(**{field: value}))


def test_missing_field_is_named():
    card = tiny_card()
    del card["license"]
    with pytest.raises(ModelError, match="'license' is missing"):
        validate_card(card)


def test_registry_lists_finds_and_loads(make_model, model_dir):
    make_model(tiny_card("model-a"))
    make_model(tiny_card("model-b", task="denoise",
                         output={"modality": "MR", "normalization": {"kind": "same_as_input"}}))
    assert [c.id for c in registry.list_models()] == ["model-a", "model-b"]
    assert [c.id for c in registry.list_models("denoise")] == ["model-b"]
    card = registry.get_model("model-a")
    net = registry.load_network(card)
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    # the same weights are cached: a second load returns the same module
    assert registry.load_network(card) is net
    # a model folder path works as an id
    assert registry.get_model(model_dir / "model-a").id == "model-a"


def test_unknown_model_lists_installed(make_model):
    make_model(tiny_card("model-a"))
    with pytest.raises(ModelError, match="Unknown model 'nope'.*model-a"):
        registry.get_model("nope")


def test_tampered_weights_are_refused(make_model, model_dir):
    card = make_model(tiny_card("model-a"))
    data = bytearray(card.weights_path.read_bytes())
    data[-1] ^= 0xFF
    card.weights_path.write_bytes(bytes(data))
    registry.clear_cache()
    with pytest.raises(ModelError, match="SHA-256"):
        registry.load_network(registry.get_model("model-a"))


def test_weights_that_do_not_fit_the_architecture(make_model, model_dir):
    make_model(tiny_card("model-a"))
    card_path = model_dir / "model-a" / "card.json"
    data = json.loads(card_path.read_text())
    data["architecture"]["params"]["features"] = 8
    card_path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit"):
        registry.load_network(registry.get_model("model-a"))


def test_broken_card_does_not_hide_other_models(make_model, model_dir):
    make_model(tiny_card("model-a"))
    (model_dir / "junk").mkdir()
    (model_dir / "junk" / "card.json").write_text("{not json")
    assert [c.id for c in registry.list_models()] == ["model-a"]
    with pytest.raises(ModelError, match="not valid JSON"):
        registry.list_models(strict=True)


def test_save_model_stores_fp16_and_checksum(make_model):
    card = make_model(tiny_card("model-a"), dtype=torch.float16)
    from safetensors.torch import load_file

    tensors = load_file(str(card.weights_path))
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert registry.sha256_file(card.weights_path) == card.sha256


def test_install_model_validates_then_copies(make_model, tmp_path, monkeypatch):
    src_card = make_model(tiny_card("model-a"))
    other = tmp_path / "other-user-dir"
    monkeypatch.setenv("MEDGAN_MODELS_DIR", str(other))
    installed = registry.install_model(src_card.folder)
    assert installed.folder == other / "model-a" and registry.verify_weights(installed)
    with pytest.raises(ModelError, match="already installed"):
        registry.install_model(src_card.folder)
    # a tampered source is refused and nothing is copied
    data = bytearray(src_card.weights_path.read_bytes())
    data[-1] ^= 0xFF
    src_card.weights_path.write_bytes(bytes(data))
    registry.clear_cache()
    with pytest.raises(ModelError, match="SHA-256"):
        registry.install_model(src_card.folder, replace=True)
    registry.load_network(registry.get_model("model-a"))  # the good copy is cached under the same SHA-256 ...
    with pytest.raises(ModelError, match="SHA-256"):  # ... and still the tampered file is refused
        registry.install_model(src_card.folder, replace=True)
    assert registry.verify_weights(registry.get_model("model-a"))


def test_every_architecture_a_card_names_is_registered():
    from conftest import REPO

    from MedGANLogic.models import ARCHITECTURES, build_network

    cards = (REPO / "Resources" / "Models").glob("*/card.json")
    names = {json.loads(p.read_text())["architecture"]["name"] for p in cards}
    assert names and names <= set(ARCHITECTURES.names())
    with pytest.raises(ModelError, match="Unknown architecture 'nope'; known: .*unet2d"):
        build_network("nope", {})


def test_a_missing_family_module_is_an_error_not_skipped(monkeypatch):
    from MedGANLogic.models import ARCHITECTURES

    monkeypatch.setattr(ARCHITECTURES, "_modules", ARCHITECTURES._modules + (".no_such_family",))
    monkeypatch.setattr(ARCHITECTURES, "_loaded", False)
    with pytest.raises(ModuleNotFoundError, match="no_such_family"):
        ARCHITECTURES.get("unet2d")
