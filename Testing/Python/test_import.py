"""`medgan import`: pytorch-CycleGAN-and-pix2pix generator checkpoints become MedGAN models that compute the same
function. The reference forwards below follow the original networks' documented layout with plain functional
ops, independently of MedGAN's modules."""

from __future__ import annotations

import argparse
import os
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from MedGANLogic.errors import InputError
from MedGANLogic.models.importer import add_arguments, clean_state_dict, detect_layout, import_pix2pix, main


def _norm_entries(prefix: str, ch: int, norm: str, g: torch.Generator) -> dict:
    if norm != "batch":
        return {}  # instance norm without affine parameters or running statistics
    return {prefix + "weight": 1 + 0.1 * torch.randn(ch, generator=g),
            prefix + "bias": 0.1 * torch.randn(ch, generator=g),
            prefix + "running_mean": 0.1 * torch.randn(ch, generator=g),
            prefix + "running_var": 1 + 0.1 * torch.rand(ch, generator=g),
            prefix + "num_batches_tracked": torch.tensor(7)}


def _conv(prefix: str, shape: tuple, bias: bool, g: torch.Generator, bias_len: int) -> dict:
    out = {prefix + "weight": 0.2 * torch.randn(*shape, generator=g)}
    if bias:
        out[prefix + "bias"] = 0.1 * torch.randn(bias_len, generator=g)
    return out


def pix2pix_unet_state(depth: int, ngf: int, norm: str, in_nc: int = 1, out_nc: int = 1) -> OrderedDict:
    """A state dict with the keys, order and shapes of pytorch-CycleGAN-and-pix2pix's UnetGenerator."""
    g = torch.Generator().manual_seed(0)
    bias = norm == "instance"
    state: OrderedDict = OrderedDict()

    def block(prefix: str, level: int) -> None:
        inner = ngf * min(2 ** level, 8)
        outer = out_nc if level == 0 else ngf * min(2 ** (level - 1), 8)
        cin = in_nc if level == 0 else outer
        seq = prefix + "model."
        if level == 0:
            state.update(_conv(seq + "0.", (inner, cin, 4, 4), bias, g, inner))
            block(seq + "1.", 1)
            state.update(_conv(seq + "3.", (2 * inner, outer, 4, 4), True, g, outer))
        elif level == depth - 1:
            state.update(_conv(seq + "1.", (inner, cin, 4, 4), bias, g, inner))
            state.update(_conv(seq + "3.", (inner, outer, 4, 4), bias, g, outer))
            state.update(_norm_entries(seq + "4.", outer, norm, g))
        else:
            state.update(_conv(seq + "1.", (inner, cin, 4, 4), bias, g, inner))
            state.update(_norm_entries(seq + "2.", inner, norm, g))
            block(seq + "3.", level + 1)
            state.update(_conv(seq + "5.", (2 * inner, outer, 4, 4), bias, g, outer))
            state.update(_norm_entries(seq + "6.", outer, norm, g))

    block("model.", 0)
    return state


def _apply_norm(x, state, prefix, norm):
    if norm == "batch":
        return F.batch_norm(x, state[prefix + "running_mean"], state[prefix + "running_var"], state[prefix + "weight"],
                            state[prefix + "bias"], training=False)
    return F.instance_norm(x)


def reference_unet(state: dict, x: torch.Tensor, depth: int, norm: str) -> torch.Tensor:
    def conv(h, p, transpose=False):
        op = F.conv_transpose2d if transpose else F.conv2d
        return op(h, state[p + "weight"], state.get(p + "bias"), stride=2, padding=1)

    def block(prefix: str, h: torch.Tensor, level: int) -> torch.Tensor:
        seq = prefix + "model."
        if level == 0:
            y = conv(h, seq + "0.")
            y = block(seq + "1.", y, 1)
            return torch.tanh(conv(F.relu(y), seq + "3.", True))
        if level == depth - 1:
            y = conv(F.leaky_relu(h, 0.2), seq + "1.")
            y = _apply_norm(conv(F.relu(y), seq + "3.", True), state, seq + "4.", norm)
        else:
            y = _apply_norm(conv(F.leaky_relu(h, 0.2), seq + "1."), state, seq + "2.", norm)
            y = block(seq + "3.", y, level + 1)
            y = _apply_norm(conv(F.relu(y), seq + "5.", True), state, seq + "6.", norm)
        return torch.cat([h, y], 1)

    return block("model.", x, 0)


def pix2pix_resnet_state(n_blocks: int, ngf: int, norm: str, in_nc: int = 1, out_nc: int = 1) -> OrderedDict:
    """Keys, order and shapes of pytorch-CycleGAN-and-pix2pix's ResnetGenerator (no dropout)."""
    g = torch.Generator().manual_seed(1)
    bias = norm == "instance"
    state: OrderedDict = OrderedDict()
    state.update(_conv("model.1.", (ngf, in_nc, 7, 7), bias, g, ngf))
    state.update(_norm_entries("model.2.", ngf, norm, g))
    state.update(_conv("model.4.", (2 * ngf, ngf, 3, 3), bias, g, 2 * ngf))
    state.update(_norm_entries("model.5.", 2 * ngf, norm, g))
    state.update(_conv("model.7.", (4 * ngf, 2 * ngf, 3, 3), bias, g, 4 * ngf))
    state.update(_norm_entries("model.8.", 4 * ngf, norm, g))
    for b in range(n_blocks):
        p = f"model.{10 + b}.conv_block."
        state.update(_conv(p + "1.", (4 * ngf, 4 * ngf, 3, 3), bias, g, 4 * ngf))
        state.update(_norm_entries(p + "2.", 4 * ngf, norm, g))
        state.update(_conv(p + "5.", (4 * ngf, 4 * ngf, 3, 3), bias, g, 4 * ngf))
        state.update(_norm_entries(p + "6.", 4 * ngf, norm, g))
    i = 10 + n_blocks
    state.update(_conv(f"model.{i}.", (4 * ngf, 2 * ngf, 3, 3), bias, g, 2 * ngf))
    state.update(_norm_entries(f"model.{i + 1}.", 2 * ngf, norm, g))
    state.update(_conv(f"model.{i + 3}.", (2 * ngf, ngf, 3, 3), bias, g, ngf))
    state.update(_norm_entries(f"model.{i + 4}.", ngf, norm, g))
    state.update(_conv(f"model.{i + 7}.", (out_nc, ngf, 7, 7), True, g, out_nc))
    return state


def reference_resnet(state: dict, x: torch.Tensor, n_blocks: int, norm: str) -> torch.Tensor:
    def conv(h, p, stride=1, pad=0):
        return F.conv2d(h, state[p + "weight"], state.get(p + "bias"), stride=stride, padding=pad)

    def up(h, p):
        return F.conv_transpose2d(h, state[p + "weight"], state.get(p + "bias"), stride=2, padding=1, output_padding=1)

    h = F.relu(_apply_norm(conv(F.pad(x, (3,) * 4, mode="reflect"), "model.1."), state, "model.2.", norm))
    h = F.relu(_apply_norm(conv(h, "model.4.", 2, 1), state, "model.5.", norm))
    h = F.relu(_apply_norm(conv(h, "model.7.", 2, 1), state, "model.8.", norm))
    for b in range(n_blocks):
        p = f"model.{10 + b}.conv_block."
        y = F.relu(_apply_norm(conv(F.pad(h, (1,) * 4, mode="reflect"), p + "1."), state, p + "2.", norm))
        h = h + _apply_norm(conv(F.pad(y, (1,) * 4, mode="reflect"), p + "5."), state, p + "6.", norm)
    i = 10 + n_blocks
    h = F.relu(_apply_norm(up(h, f"model.{i}."), state, f"model.{i + 1}.", norm))
    h = F.relu(_apply_norm(up(h, f"model.{i + 3}."), state, f"model.{i + 4}.", norm))
    return torch.tanh(conv(F.pad(h, (3,) * 4, mode="reflect"), f"model.{i + 7}."))


def _as_fp16(state: dict) -> dict:
    """The state as the fp16 model file stores it, so references and imports compare exactly."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in clean_state_dict(state).items()}


def _load_imported(folder):
    from MedGANLogic.models.card import load_card
    from MedGANLogic.models.registry import load_network

    card = load_card(folder)
    return card, load_network(card, "cpu")


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_checkpoint_imports_to_the_same_function(tmp_path, norm):
    state = pix2pix_unet_state(depth=5, ngf=4, norm=norm)
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(OrderedDict(("module." + k, v) for k, v in state.items()), ckpt)  # as saved from DataParallel
    imported = import_pix2pix(ckpt, tmp_path / "models", model_id="imported-unet", input_modality="MR",
                              output_modality="MR", output_window=[0, 1000])
    card, net = _load_imported(imported.folder)
    assert card.architecture == "unet2d"
    assert card.arch_params == {"in_channels": 1, "out_channels": 1, "features": 4, "depth": 5, "norm": norm,
                                "upsample": "transpose"}
    x = torch.rand(2, 1, 64, 32) * 2 - 1
    expected = reference_unet(_as_fp16(state), x, depth=5, norm=norm)
    with torch.no_grad():
        assert torch.allclose(net(x), expected, atol=1e-5)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_checkpoint_imports_to_the_same_function(tmp_path, norm):
    state = pix2pix_resnet_state(n_blocks=3, ngf=4, norm=norm)
    ckpt = tmp_path / "latest_net_G_A.pth"
    torch.save(state, ckpt)
    imported = import_pix2pix(ckpt, tmp_path / "models", model_id="imported-resnet", input_modality="MR",
                              output_modality="CT", output_window=[-1000, 2000])
    card, net = _load_imported(imported.folder)
    assert card.architecture == "resnet2d" and card.arch_params["n_blocks"] == 3
    assert card.output["normalization"] == {"kind": "ct_window", "window": [-1000.0, 2000.0], "range": [-1, 1]}
    x = torch.rand(1, 1, 24, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x), reference_resnet(_as_fp16(state), x, 3, norm), atol=1e-5)


def test_wrong_norm_and_wrong_arch_are_explained(tmp_path):
    state = clean_state_dict(pix2pix_unet_state(depth=5, ngf=4, norm="batch"))
    with pytest.raises(InputError, match="--norm batch"):
        detect_layout(state, norm="instance")
    with pytest.raises(InputError, match="5 U-Net levels"):
        detect_layout(state, arch="unet_256")
    with pytest.raises(InputError, match="Not a pytorch-CycleGAN"):
        detect_layout({"conv.weight": torch.zeros(1)})


@pytest.mark.parametrize("arch", ["unet", "resnet"])
def test_a_checkpoint_cut_short_is_refused_naming_what_is_missing(tmp_path, capsys, arch):
    from MedGANLogic.cli import main as medgan

    state = (pix2pix_unet_state(depth=5, ngf=4, norm="batch") if arch == "unet"
             else pix2pix_resnet_state(n_blocks=3, ngf=4, norm="instance"))
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    kept = keys[: len(keys) // 2]  # a save cut short: the second half of the layers never written
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(OrderedDict((k, state[k]) for k in kept), ckpt)
    first_missing = keys[len(kept)].rsplit(".", 1)[0]
    with pytest.raises(InputError, match=rf"tensors are missing: {re.escape(first_missing)} \(") as err:
        import_pix2pix(ckpt, tmp_path / "models", model_id="partial", output_window=[0, 1])
    if arch == "unet":  # all levels were begun, so the depth is known and so is every missing tensor
        assert f"{len(keys) - len(kept)} of its {len(keys)} tensors are missing" in str(err.value)
    assert not (tmp_path / "models").exists()
    # the command says the same in one line
    code = medgan(["import", str(ckpt), "--id", "partial", "--output-window", "0", "1", "--output",
                   str(tmp_path / "models")])
    stderr = capsys.readouterr().err
    assert code == 1 and "tensors are missing" in stderr and first_missing in stderr and "max()" not in stderr


def test_a_checkpoint_missing_one_layer_or_with_foreign_tensors_names_them(tmp_path):
    state = clean_state_dict(pix2pix_unet_state(depth=5, ngf=4, norm="batch"))
    hole = OrderedDict((k, v) for k, v in state.items() if not k.startswith("model.model.1.model.2."))
    with pytest.raises(InputError, match=r"4 of its \d+ tensors are missing: "
                                         r"model\.model\.1\.model\.2 \(weight, bias, running_mean, running_var\)"):
        detect_layout(hole)
    extra = OrderedDict(state, **{"head.weight": torch.zeros(1, 1, 1, 1)})
    with pytest.raises(InputError, match=r"1 tensors do not belong to it: head \(weight\)"):
        detect_layout(extra)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_resnet_blocks_with_dropout_are_a_complete_checkpoint(norm):
    """With dropout (their default without --no_dropout) each block's second conv and norm sit one index on."""
    def shifted(key: str) -> str:
        m = re.match(r"(model\.\d+\.conv_block\.)(\d+)\.(.*)", key)
        return f"{m.group(1)}{int(m.group(2)) + 1}.{m.group(3)}" if m and int(m.group(2)) >= 5 else key

    state = clean_state_dict(pix2pix_resnet_state(n_blocks=3, ngf=4, norm=norm))
    arch, params = detect_layout(OrderedDict((shifted(k), v) for k, v in state.items()))
    assert arch == "resnet2d" and params["n_blocks"] == 3 and params["norm"] == norm


def test_pickled_code_is_refused(tmp_path):
    bad = tmp_path / "latest_net_G.pth"
    torch.save({"model.model.0.weight": torch.zeros(1), "payload": os.getcwd}, bad)
    with pytest.raises(InputError, match="tensors-only"):
        import_pix2pix(bad, tmp_path / "models", model_id="bad", output_window=[0, 1])
    assert not (tmp_path / "models").exists()


def test_import_command_writes_and_installs(tmp_path, model_dir, capsys):
    from MedGANLogic.models.registry import get_model

    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(pix2pix_resnet_state(n_blocks=2, ngf=4, norm="instance"), ckpt)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(ckpt), "--id", "my-t1-to-t2", "--input-contrast", "T1w", "--output-contrast",
                              "T2w", "--output-window", "0", "1200"])
    assert main(args) == 0
    card = get_model("my-t1-to-t2")  # found by id at once: written to the user model folder
    assert card.folder == model_dir / "my-t1-to-t2"
    assert card.input["normalization"]["kind"] == "mr_percentile"
    with pytest.raises(InputError, match="--replace"):
        main(args)
    # a model folder is installed as is
    other = tmp_path / "export"
    import_pix2pix(ckpt, other, model_id="folder-model", output_window=[0, 1])
    assert main(parser.parse_args([str(other / "folder-model")])) == 0
    assert get_model("folder-model").folder == model_dir / "folder-model"
    with pytest.raises(InputError, match="--id is required"):
        main(parser.parse_args([str(ckpt)]))
