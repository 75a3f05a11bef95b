"""Group-normalised advantages against known values and a per-group loop reference."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from r3fast.advantages import group_advantages


def reference(rewards, group_ids, scale_std=True, eps=1e-4):
    """Straight from the definition, one group at a time."""
    out = []
    for r, g in zip(rewards, group_ids, strict=True):
        group = [x for x, h in zip(rewards, group_ids, strict=True) if h == g]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / len(group))
        out.append((r - mean) / (std + eps) if scale_std else r - mean)
    return out


def test_known_reward_vectors():
    # one success in four: mean 0.25, population std sqrt(3)/4
    result = group_advantages([1, 0, 0, 0], [7, 7, 7, 7])
    std = math.sqrt(3) / 4
    assert result.advantages == pytest.approx([0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3)
    assert result.flat_groups == []
    # half and half: std 0.5, so +-1 up to eps
    assert group_advantages([1, 0, 1, 0], [0] * 4).advantages == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001] * 2)
    # no std scaling (Dr. GRPO): just centred
    assert group_advantages([1, 0, 0, 0], [0] * 4, scale_std=False).advantages == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_all_equal_groups_are_flagged_and_get_exact_zeros():
    result = group_advantages([1, 1, 0, 0, 0.1, 0.1, 0.1, 1, 0], [3, 3, 4, 4, 5, 5, 5, 6, 6])
    assert result.flat_groups == [3, 4, 5]
    assert result.advantages[:7] == [0.0] * 7  # exact, although 0.1 * 3 / 3 != 0.1 in floating point
    assert result.has_signal(6) and not result.has_signal(3)
    assert result.group_sizes == {3: 2, 4: 2, 5: 3, 6: 2}


def test_singleton_group_has_no_signal():
    result = group_advantages([1.0], [0])
    assert result.advantages == [0.0] and result.flat_groups == [0]


@given(
    st.lists(st.tuples(st.sampled_from([0.0, 1.0, 0.5]), st.integers(0, 4)), min_size=1, max_size=40),
    st.booleans(),
)
def test_matches_reference(pairs, scale_std):
    rewards, groups = [p[0] for p in pairs], [p[1] for p in pairs]
    result = group_advantages(rewards, groups, scale_std=scale_std)
    assert result.advantages == pytest.approx(reference(rewards, groups, scale_std), abs=1e-9)
    for g in set(groups):
        adv = [a for a, h in zip(result.advantages, groups, strict=True) if h == g]
        assert sum(adv) == pytest.approx(0.0, abs=1e-9)  # centred per group
        assert (g in result.flat_groups) == (len({r for r, h in zip(rewards, groups, strict=True) if h == g}) == 1)


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        group_advantages([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([float("nan"), 0.0], [0, 0])
    with pytest.raises(ValueError, match="eps"):
        group_advantages([1.0], [0], eps=-1)
    assert group_advantages([], []).advantages == []
