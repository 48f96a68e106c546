import json
import struct

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


# --- model folders that reach outside themselves or ask for too much (issue 13: 7-9) --------------------------
@pytest.mark.parametrize("name", ["../../other/weights.safetensors", "/abs/weights.safetensors",
                                  "sub/../../weights.safetensors", "..\\\\up\\\\weights.safetensors", ".."])
def test_weights_file_must_be_a_name_inside_the_folder(name):
    with pytest.raises(ModelError, match="'weights.file'.*inside the model folder"):
        validate_card(tiny_card(weights={"file": name, "sha256": "0" * 64}))


def test_weights_symlink_leading_outside_the_folder_is_refused(make_model, model_dir, tmp_path):
    card = make_model(tiny_card("model-a"))
    outside = tmp_path / "elsewhere.safetensors"
    card.weights_path.rename(outside)
    card.weights_path.symlink_to(outside)
    with pytest.raises(ModelError, match="'weights.file'.*outside"):
        registry.get_model(model_dir / "model-a")
    assert registry.list_models() == []  # an invalid folder is skipped in listings ...
    with pytest.raises(ModelError, match="'weights.file'.*outside"):  # ... and named when strict
        registry.list_models(strict=True)
    with pytest.raises(ModelError, match="'weights.file'.*outside"):
        registry.install_model(model_dir / "model-a", replace=True)


def test_install_refuses_a_card_pointing_outside_and_copies_nothing(make_model, model_dir, tmp_path, monkeypatch):
    card = make_model(tiny_card("model-a"))
    src = tmp_path / "download" / "model-b"
    src.mkdir(parents=True)
    data = json.loads((card.folder / "card.json").read_text())
    data["id"] = "model-b"
    data["weights"]["file"] = "../../models/model-a/weights.safetensors"
    (src / "card.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="'weights.file'"):
        registry.install_model(src)
    assert not (model_dir / "model-b").exists()


@pytest.mark.parametrize("field, value, message", [
    ("tile_size", [1_000_000, 1_000_000], r"'tile_size'.*at most 2048"),
    ("architecture", {"name": "conv2d", "params": {"features": 10 ** 7, "depth": 2}},
     r"'architecture.params.features'.*1\.\.1024"),
    ("architecture", {"name": "seg_unet2d", "params": {"features": [16, 10 ** 9]}},
     r"'architecture.params.features'.*1\.\.1024"),
    ("architecture", {"name": "fanogan2d", "params": {"generator": {"levels": 10 ** 6}}},
     r"'architecture.params.generator.levels'.*0\.\.64"),
    ("architecture", {"name": "conv2d", "params": {"whatever": 10 ** 12}},
     r"'architecture.params.whatever'.*4096"),
])
def test_absurd_sizes_are_bounded_at_validation(field, value, message):
    with pytest.raises(ModelError, match=message):
        validate_card(tiny_card(**{field: value}))


def test_absurd_3d_patches_and_scale_factors_are_bounded():
    with pytest.raises(ModelError, match=r"'tile_size'.*at most 512 .*256\^3"):
        validate_card(tiny_card(dims="3d", tile_size=[512, 512, 512]))
    validate_card(tiny_card(dims="3d", tile_size=[64, 128, 128]))
    with pytest.raises(ModelError, match=r"'scale_factor'.*at most 8"):
        validate_card(tiny_card(task="superres", scale_factor=[1, 1000, 1000],
                                output={"modality": "MR", "normalization": {"kind": "same_as_input"}}))
    with pytest.raises(ModelError, match=r"'context_slices'.*at most 32"):
        validate_card(tiny_card(dims="2.5d", context_slices=10 ** 6))


def test_a_network_too_large_to_load_is_refused_before_it_is_built(make_model, monkeypatch):
    card = make_model(tiny_card("model-a"))
    monkeypatch.setattr(registry, "MAX_PARAMETERS", 10)  # the tiny net has 77
    registry.clear_cache()
    with pytest.raises(ModelError, match=r"model-a.*77 parameters.*at most 10 "):
        registry.load_network(card)


def _rewrite_weights(card, payload: bytes):
    """Replace a model's weights with ``payload`` and update the card's SHA-256, as a careless exporter would."""
    card.weights_path.write_bytes(payload)
    path = card.folder / "card.json"
    data = json.loads(path.read_text())
    data["weights"]["sha256"] = registry.sha256_file(card.weights_path)
    path.write_text(json.dumps(data))
    registry.clear_cache()
    return registry.get_model(card.id)


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("case", ["huge header length", "huge tensor", "truncated", "not safetensors", "empty",
                                  "fits the file, not the network"])
def test_malformed_weights_are_a_one_line_model_error(make_model, case):
    card = make_model(tiny_card("model-a"))
    good = card.weights_path.read_bytes()
    payload = {
        "huge header length": struct.pack("<Q", 2 ** 62) + good[8:],
        "huge tensor": _safetensors({"w": {"dtype": "F32", "shape": [10 ** 12], "data_offsets": [0, 4 * 10 ** 12]}},
                                    b"\0" * 16),
        "truncated": good[: len(good) // 2],
        "not safetensors": b"PK\x03\x04 a zip file, e.g. a torch.save checkpoint",
        "empty": b"",
        "fits the file, not the network": _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                                       b"\0" * 16),
    }[case]
    card = _rewrite_weights(card, payload)
    with pytest.raises(ModelError, match="model-a") as err:
        registry.load_network(card)
    assert len(str(err.value).splitlines()) == 1


def test_malformed_weights_end_the_command_in_one_line(make_model, oblique_volume, tmp_path, capsys):
    from MedGANLogic.cli import main
    from MedGANLogic.io import write_volume

    card = make_model(tiny_card("model-a"))
    _rewrite_weights(card, struct.pack("<Q", 2 ** 62) + b"{}")
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    code = main(["run", "--task", "synthesize", "--model", "model-a", "--input", str(src), "--modality", "MR",
                 "--contrast", "T1w", "--output", str(tmp_path / "out.nrrd"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()  # the plan's notes (e.g. "note: reoriented ...") may come first; the error is one line
    assert code == 1 and lines[-1].startswith("medgan run: error:") and "Traceback" not in err, err
    assert all(line.startswith(("note:", "warning:")) for line in lines[:-1]), err
    assert "not a valid safetensors file" in err
