import math

import numpy as np
import pytest

from stereo_adapt_ros.adaptation import BlockSampler, SamplerConfig

BLOCKS = (6, 5, 4, 3, 2)


def test_reward_rule_matches_a_worked_example():
    sampler = BlockSampler(BLOCKS)
    # t=0 and t=1 only fill the loss history.
    assert sampler.update(0.50, trained_block=6) is None
    assert sampler.update(0.40, trained_block=4) is None
    assert np.all(sampler.scores == 0)
    # t=2: expected 2*0.40 - 0.50 = 0.30; gain 0.30 - 0.25 = 0.05 to the block of t-1 (4).
    gain = sampler.update(0.25, trained_block=2)
    assert gain == pytest.approx(0.05)
    assert sampler.scores == pytest.approx([0, 0, 0.01 * 0.05, 0, 0])
    # t=3: expected 2*0.25 - 0.40 = 0.10; gain 0.10 - 0.20 = -0.10 to block 2; H decays first.
    gain = sampler.update(0.20, trained_block=5)
    assert gain == pytest.approx(-0.10)
    assert sampler.scores == pytest.approx([0, 0, 0.99 * 0.0005, 0, -0.001])
    probabilities = sampler.probabilities()
    exp = np.exp(sampler.scores)
    assert probabilities == pytest.approx(exp / exp.sum())
    assert math.isclose(probabilities.sum(), 1.0)


def test_probabilistic_choice_follows_softmax_of_scores():
    sampler = BlockSampler(BLOCKS, seed=3)
    sampler.scores[:] = [0, 0, 0, 0, 3.0]
    picks = [sampler.choose() for _ in range(2000)]
    share = picks.count(2) / len(picks)
    expected = math.exp(3) / (4 + math.exp(3))
    assert abs(share - expected) < 0.04


def test_other_strategies():
    assert [BlockSampler(BLOCKS, SamplerConfig("round_robin")).choose() for _ in range(1)] == [6]
    robin = BlockSampler(BLOCKS, SamplerConfig("round_robin"))
    assert [robin.choose() for _ in range(7)] == [6, 5, 4, 3, 2, 6, 5]
    fixed = BlockSampler(BLOCKS, SamplerConfig("fixed", fixed_block=3))
    assert {fixed.choose() for _ in range(10)} == {3}
    uniform = BlockSampler(BLOCKS, SamplerConfig("uniform"), seed=1)
    assert {uniform.choose() for _ in range(200)} == set(BLOCKS)
    greedy = BlockSampler(BLOCKS, SamplerConfig("argmax"))
    greedy.scores[1] = 0.3
    assert greedy.choose() == 5


def test_non_finite_loss_is_ignored_and_reset_clears_history():
    sampler = BlockSampler(BLOCKS)
    for loss in (0.5, 0.4):
        sampler.update(loss, 6)
    assert sampler.update(float("nan"), 5) is None
    assert sampler.update(0.2, 5) == pytest.approx(0.1)
    sampler.reset()
    assert np.all(sampler.scores == 0)
    assert sampler.update(0.1, 6) is None


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="mad_sampling"):
        BlockSampler(BLOCKS, SamplerConfig("greedy"))
    with pytest.raises(ValueError, match="fixed block"):
        BlockSampler(BLOCKS, SamplerConfig("fixed", fixed_block=1))
