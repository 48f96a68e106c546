"""The GAN generators: registered by name, fully convolutional at any multiple of their down-sampling factor."""

from __future__ import annotations

import pytest
import torch

from MedGANLogic.models import build_network

CASES = [
    ("unet2d", {"features": 4, "depth": 4}, 16),
    ("unet2d", {"features": 4, "depth": 3, "upsample": "resize", "norm": "batch"}, 8),
    ("resnet2d", {"features": 4, "n_blocks": 2}, 4),
    ("resnet2d", {"features": 4, "n_blocks": 1, "upsample": "transpose", "norm": "none"}, 4),
    ("red_cnn2d", {"features": 4, "levels": 2}, 4),
    ("red_cnn2d", {"in_channels": 3, "features": 4, "levels": 3}, 8),
    ("mirror_unet2d", {"features": 4, "depth": 3}, 8),
]


@pytest.mark.parametrize("name,params,multiple", CASES)
def test_generators_are_fully_convolutional(name, params, multiple):
    net = build_network(name, params).eval()
    assert net.size_multiple == multiple
    cin = params.get("in_channels", 1)
    for h, w in ((multiple * 3, multiple * 5), (multiple * 6, multiple * 2)):
        with torch.no_grad():
            y = net(torch.rand(2, cin, h, w) * 2 - 1)
        assert y.shape == (2, 1, h, w)
        assert torch.isfinite(y).all()
        if name != "red_cnn2d":  # tanh output
            assert y.abs().max() <= 1


def test_unet_skip_connections_carry_fine_detail():
    """The output depends on single pixels of the input through the skips, not only through the bottleneck."""
    torch.manual_seed(0)
    net = build_network("unet2d", {"features": 4, "depth": 3, "norm": "none"}).eval()
    x = torch.zeros(1, 1, 16, 16)
    y0 = net(x)
    x[0, 0, 5, 6] = 1
    diff = (net(x) - y0).abs()[0, 0]
    assert diff[4:8, 4:8].sum() > diff.sum() * 0.3  # the change is concentrated near the pixel


def test_the_mirror_is_taken_about_the_heads_midline_and_reaches_the_output():
    """mirror_unet2d: each slice is mirrored about its head's column centroid (not the slice's centre: a head off
    centre still meets its own other side), a slice without head about its centre; the mirrored half changes the
    output (the network sees the other hemisphere at the same place)."""
    from MedGANLogic.models.unet import mirrored

    x = torch.full((3, 1, 8, 16), -1.0)
    x[0, 0, 2:6, 3:8] = torch.rand(4, 5)  # a head in columns 3-7, off the slice's centre (7.5)
    x[1, 0, 1:7, 4:10] = torch.rand(6, 6)  # columns 4-9: its centre 6.5 lies between two columns
    m = mirrored(x)
    assert torch.equal(m[0, 0, 2:6, 3:8], x[0, 0, 2:6, 3:8].flip(-1))
    assert torch.equal(m[1, 0, 1:7, 4:10], x[1, 0, 1:7, 4:10].flip(-1))
    assert torch.equal(m[2], x[2])  # no head: background mirrored onto background
    assert torch.equal(mirrored(m), x)
    torch.manual_seed(0)
    net = build_network("mirror_unet2d", {"features": 4, "depth": 3, "norm": "none"}).eval()
    head = torch.full((1, 1, 16, 16), -1.0)
    head[..., 2:14, 2:14] = 0.0
    with torch.no_grad():
        y0 = net(head)
        lesion = head.clone()
        lesion[0, 0, 7, 4] = 1.0  # on the left: the mirror shows it on the right too
        diff = (net(lesion) - y0).abs()[0, 0]
    assert diff[6:9, 10:13].sum() > 0.05 * diff.sum()  # the output moves where the mirror put it


def test_red_cnn_starts_as_identity_and_learns_a_residual():
    net = build_network("red_cnn2d", {"in_channels": 3, "features": 4, "levels": 2})
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), x[:, 1:2])  # the centre slice of a 2.5d slab, untouched
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = x[:, 1:2] * 0.5
    for _ in range(20):
        opt.zero_grad()
        loss = (net(x) - target).abs().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * (x[:, 1:2] - target).abs().mean().item()


def test_bad_parameters_are_refused():
    from MedGANLogic.errors import ModelError

    with pytest.raises(ValueError, match="upsample"):
        build_network("unet2d", {"upsample": "pixelshuffle"})
    with pytest.raises(ValueError, match="norm"):
        build_network("resnet2d", {"norm": "group"})
    with pytest.raises(ModelError, match="do not fit"):
        build_network("red_cnn2d", {"depth": 3})
