"""The training pooler (vildtrain.roialign) against torchvision's MultiScaleRoIAlign:
the same pooled features and the same feature gradients."""
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from vildtrain.models.roialign import BagMultiScaleRoIAlign, bag_roi_align

NAMES = ["p2", "p3", "p4", "p5"]
STRIDES = [4, 8, 16, 32]


def pooler(cls, sampling_ratio: int):
    m = cls(NAMES, 7, sampling_ratio, canonical_scale=48, canonical_level=4)
    m.scales = [1.0 / s for s in STRIDES]
    m.map_levels = initLevelMapper(2, 5, canonical_scale=48, canonical_level=4)
    return m


def random_boxes(g: torch.Generator, n: int, side: int) -> torch.Tensor:
    """Boxes of every size, some reaching past the picture and some under 1 px."""
    xy = torch.rand(n, 2, generator=g) * (side + 40) - 20
    wh = torch.rand(n, 2, generator=g) ** 2 * side * 1.5 + 0.2
    return torch.cat([xy, xy + wh], dim=1)


def pool_with_grads(m, feats, boxes, upstream):
    for f in feats.values():
        f.grad = None
    out = m(feats, boxes, [(192, 160)] * len(boxes))
    (out * upstream).sum().backward()
    return out.detach(), [torch.zeros_like(f) if f.grad is None else f.grad.clone() for f in feats.values()]


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_bag_pooler_matches_torchvision_values_and_gradients(sampling_ratio):
    g = torch.Generator().manual_seed(sampling_ratio)
    feats = {n: torch.randn(3, 8, 192 // s, 160 // s, generator=g).requires_grad_() for n, s in zip(NAMES, STRIDES)}
    boxes = [random_boxes(g, k, 192) for k in (40, 0, 25)]
    upstream = torch.randn(65, 8, 7, 7, generator=g)
    want, want_grads = pool_with_grads(pooler(MultiScaleRoIAlign, sampling_ratio), feats, boxes, upstream)
    got, got_grads = pool_with_grads(pooler(BagMultiScaleRoIAlign, sampling_ratio), feats, boxes, upstream)
    levels = pooler(MultiScaleRoIAlign, sampling_ratio).map_levels(boxes)
    assert len(set(levels.tolist())) >= 3, "the boxes should spread over the levels"
    assert got.shape == want.shape
    # the Go pipeline's RoIAlign is held to golden pooled features within 1e-5
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for name, a, b in zip(NAMES, got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_bag_roi_align_edges_read_like_torchvision():
    """A box straddling the border: samples within 1 px outside clamp to the edge,
    samples further out read 0."""
    from torchvision.ops import roi_align
    feat = torch.arange(1.0, 1.0 + 4 * 5).view(1, 1, 4, 5)
    boxes = torch.tensor([[-3.0, -1.5, 6.5, 2.0], [3.5, 2.5, 7.0, 6.0], [1.0, 1.0, 1.2, 1.1]])
    want = roi_align(feat, [boxes], output_size=(3, 3), spatial_scale=1.0, sampling_ratio=2, aligned=False)
    got = bag_roi_align([feat], [1.0], [boxes], [torch.zeros(3, dtype=torch.long)], 3, 2)[0]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_bag_roi_align_needs_a_fixed_sampling_ratio():
    with pytest.raises(ValueError, match="sampling_ratio"):
        bag_roi_align([torch.zeros(1, 1, 4, 4)], [1.0], [torch.zeros(1, 4)], [torch.zeros(1, dtype=torch.long)], 2, 0)
