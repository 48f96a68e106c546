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
