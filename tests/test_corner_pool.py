import itertools

import pytest
import torch

from cornernet_cli.model.corner_pool import DIRECTIONS, CornerPool, corner_pool, corner_pool_doubling


def naive_pool(x: torch.Tensor, direction: str) -> torch.Tensor:
    """The DESIGN.md definition, one output element at a time."""
    out = torch.empty_like(x)
    H, W = x.shape[-2:]
    for i, j in itertools.product(range(H), range(W)):
        if direction == "top":
            window = x[..., i:, j]
        elif direction == "bottom":
            window = x[..., : i + 1, j]
        elif direction == "left":
            window = x[..., i, j:]
        else:
            window = x[..., i, : j + 1]
        out[..., i, j] = window.max(dim=-1).values
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 2, 1, 9), (1, 1, 11, 1), (2, 4, 13, 6)])
def test_corner_pool_matches_naive_loop(direction, shape):
    x = torch.randn(shape)
    expected = naive_pool(x, direction)
    assert torch.equal(corner_pool(x, direction), expected)
    assert torch.equal(corner_pool_doubling(x, direction), expected)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_doubling_with_larger_max_len_is_identical(direction):
    x = torch.randn(2, 3, 9, 14)
    assert torch.equal(corner_pool_doubling(x, direction, max_len=64), corner_pool(x, direction))


def test_top_pool_hand_example():
    x = torch.tensor([[1.0, 5.0], [3.0, 2.0], [2.0, 4.0]])
    assert corner_pool(x, "top").tolist() == [[3.0, 5.0], [3.0, 4.0], [2.0, 4.0]]
    assert corner_pool(x, "left").tolist() == [[5.0, 5.0], [3.0, 2.0], [4.0, 4.0]]
    assert corner_pool(x, "bottom").tolist() == [[1.0, 5.0], [3.0, 5.0], [3.0, 5.0]]
    assert corner_pool(x, "right").tolist() == [[1.0, 5.0], [3.0, 3.0], [2.0, 4.0]]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("fn", [corner_pool, corner_pool_doubling])
def test_gradcheck(direction, fn):
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fn(t, direction), (x,))


def test_gradient_goes_to_argmax():
    x = torch.tensor([[0.0, 3.0, 1.0, 2.0]], requires_grad=True)
    corner_pool(x, "left").sum().backward()
    # left pooling: out[j] = max(x[j:]) = 3, 3, 2, 2 -> the 3 gets 2 gradients, the 2 gets 2.
    assert x.grad.tolist() == [[0.0, 2.0, 0.0, 2.0]]


def test_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        corner_pool(torch.zeros(1, 1, 2, 2), "up")


def test_module_sum_and_disabled():
    a, b = torch.randn(1, 2, 6, 7), torch.randn(1, 2, 6, 7)
    pool = CornerPool(("top", "left"))
    assert torch.equal(pool(a, b), corner_pool(a, "top") + corner_pool(b, "left"))
    pool.export_friendly = True
    assert torch.equal(pool(a, b), corner_pool(a, "top") + corner_pool(b, "left"))
    off = CornerPool(("bottom", "right"), enabled=False)
    assert torch.equal(off(a, b), a + b)
