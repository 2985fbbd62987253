"""dermcam.rollout: attention rollout and its gradient-weighted form on attention matrices
built by hand, where the answer is known without the formula (the served maps against
torch's own rollout are in test_export_transformers)."""

from __future__ import annotations

import numpy as np
import pytest

from dermcam.engine import Attention
from dermcam.rollout import attention_rollout, gradient_rollout, read_out, rollout_map

# 1 class token + a 2×2 grid of patches
N, PREFIX, GRID = 5, 1, (2, 2)


def _answer(attention: np.ndarray, relevance: np.ndarray | None = None, readout=None):  # noqa: ANN001, ANN202
    return Attention(
        probabilities=np.array([0.5, 0.5], np.float32),
        attention=attention.astype(np.float32),
        relevance=(np.zeros_like(attention) if relevance is None else relevance).astype(np.float32),
        readout=np.eye(N)[0] if readout is None else np.asarray(readout, np.float64),
    )


def _attending(rows: dict[int, int], layers: int = 2) -> np.ndarray:
    """Every token attends to itself, except `rows`: token → the token it attends to."""
    a = np.eye(N)
    for token, to in rows.items():
        a[token] = np.eye(N)[to]
    return np.stack([a] * layers)


def test_the_class_token_attending_to_one_patch_points_at_it():
    answer = _answer(_attending({0: 3}))  # token 3, the third patch: grid cell (1, 0)
    heat = rollout_map("rollout", answer, PREFIX, GRID)
    assert heat.shape == GRID and heat.max() == 1.0
    assert np.unravel_index(int(np.argmax(heat)), GRID) == (1, 0)
    assert np.count_nonzero(heat) == 1


def test_attention_flows_through_the_layers():
    """Layer 1: patch 2 takes patch 4's content; layer 2: the class token attends to patch 2.
    The class token's information came from patches 2 and 4, rollout finds both."""
    a = np.stack([_attending({2: 4}, 1)[0], _attending({0: 2}, 1)[0]])
    heat = rollout_map("rollout", _answer(a), PREFIX, GRID)
    assert heat.ravel()[1] > 0 and heat.ravel()[3] > 0  # patches 2 and 4 (cells 1 and 3)
    assert heat.ravel()[0] == 0 and heat.ravel()[2] == 0


def test_rollout_keeps_rows_stochastic():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, N, N))
    a /= a.sum(-1, keepdims=True)
    rolled = attention_rollout(a)
    np.testing.assert_allclose(rolled.sum(-1), 1.0, atol=1e-12)
    assert (rolled >= 0).all()


def test_uniform_attention_is_a_flat_map():
    heat = rollout_map("rollout", _answer(np.full((2, N, N), 1.0 / N)), PREFIX, GRID)
    np.testing.assert_allclose(heat, 1.0)


def test_no_relevance_is_a_blank_gradient_rollout():
    """Ā = 0 everywhere: R stays the identity, and the class token's row has no patch in it."""
    np.testing.assert_array_equal(gradient_rollout(np.zeros((2, N, N))), np.eye(N))
    heat = rollout_map("gradient-rollout", _answer(_attending({0: 1})), PREFIX, GRID)
    assert not heat.any()


def test_gradient_rollout_follows_the_relevance_not_the_attention():
    attention = _attending({0: 1})
    relevance = np.zeros((2, N, N))
    relevance[1, 0, 4] = 1.0  # the last layer's class-token row, at patch 4
    heat = rollout_map("gradient-rollout", _answer(attention, relevance), PREFIX, GRID)
    assert np.unravel_index(int(np.argmax(heat)), GRID) == (1, 1)


def test_the_readout_weights_the_rows_the_head_reads():
    """Global pooling reads the patches themselves: with identity attention each patch is
    its own relevance, in proportion to the readout."""
    readout = [0.0, 1.0, 2.0, 3.0, 4.0]
    heat = read_out(np.eye(N), np.asarray(readout), PREFIX, GRID)
    np.testing.assert_allclose(heat.ravel(), np.array([1, 2, 3, 4]) / 10)


def test_a_readout_that_reached_no_token_falls_back_to_the_class_token():
    rolled = attention_rollout(_attending({0: 2}))
    np.testing.assert_array_equal(
        read_out(rolled, np.zeros(N), PREFIX, GRID), read_out(rolled, np.eye(N)[0], PREFIX, GRID)
    )


def test_an_unknown_rollout_is_refused():
    with pytest.raises(ValueError, match="unknown rollout"):
        rollout_map("rollouts", _answer(_attending({})), PREFIX, GRID)
