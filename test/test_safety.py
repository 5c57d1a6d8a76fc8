"""Adaptation that does no harm (adaptation/safety.py): the frozen-reference check, the
anchors to the initial weights, and the output check of frames that do not adapt."""

import numpy as np
import pytest
import torch

from stereo_adapt_ros.adaptation import AdapterConfig, OnlineAdapter
from stereo_adapt_ros.adaptation.safety import TRIGGER, ReferenceCheck, anchor_penalty, \
    photometric_score, proxy_score, restore_fraction

CONFIG = dict(amp="off")


def _frozen(left, right):
    return OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="none", **CONFIG)).step(left, right).disparity


def _mislead(adapter: OnlineAdapter) -> None:
    """What a harmful run of steps leaves: finite weights that predict every pixel several
    pixels off (well inside the image, so the collapse guard has nothing to say)."""
    with torch.no_grad():
        adapter.model.refinement[12].bias += 3.0


def test_judge_margins_and_patience_by_hand():
    check = ReferenceCheck(margin=0.01, patience=2)
    close = check.judge(0.105, 0.1, "proxy")  # within the absolute margin
    assert close.publish_reference and not close.lost
    first = check.judge(0.2, 0.1, "proxy")
    assert first.lost and not first.rollback
    second = check.judge(0.2, 0.1, "proxy")
    assert second.lost and second.rollback and check.rollbacks == 1
    assert "0.100 against the adapted 0.200" in second.reason()
    # A win clears the strikes; the photometric margin is relative.
    check.judge(0.2, 0.1, "proxy")
    assert not check.judge(0.1005, 0.1, "photometric").lost
    assert not check.judge(0.2, 0.1, "proxy").rollback
    assert check.checks == 6 and check.losses == 4


def test_the_check_schedule_backs_off_while_the_adapted_weights_hold_by_hand():
    def schedule(check, frames):
        return [check.due() for _ in range(frames)]

    fixed = ReferenceCheck(margin=0.01, patience=3, every=2, backoff=1)
    assert schedule(fixed, 1) == [True]
    fixed.judge(0.1, 0.2, "proxy")  # a win does not lengthen the fixed schedule
    assert schedule(fixed, 2) == [False, True]
    check = ReferenceCheck(margin=0.01, patience=3, every=1, backoff=4)
    assert check.due()
    check.judge(0.105, 0.1, "proxy")  # within the margin, not lost: every 2nd frame
    assert schedule(check, 2) == [False, True]
    check.judge(0.1, 0.2, "proxy")  # won: every 4th, the cap
    assert check.due_in == 3
    assert schedule(check, 4) == [False, False, False, True]
    check.judge(0.1, 0.2, "proxy")
    assert schedule(check, 4) == [False, False, False, True]
    check.judge(0.15, 0.1, "proxy")  # lost: every frame again
    assert schedule(check, 1) == [True]
    # Between checks, a score worse than at the last check by TRIGGER checks at once.
    check.judge(0.1, 0.2, "proxy")
    assert not check.triggered(0.1 + TRIGGER["proxy"] / 2, "proxy")
    assert check.triggered(0.1 + 2 * TRIGGER["proxy"], "proxy") and check.triggers == 1
    assert not check.triggered(1.0, "photometric")  # another kind of score: no reference
    check.restart()  # after a reset: the schedule starts again
    assert not check.triggered(0.9, "proxy") and check.due()
    assert not ReferenceCheck(0.01, 3, every=0, backoff=8).due()


def test_scores_by_hand():
    prediction = torch.tensor([[[[1.0, 2.0, 10.0, 5.0]]]])
    proxy = torch.tensor([[[[1.5, 9.0, 10.0, 5.0]]]])
    confident = torch.tensor([[[[True, True, True, False]]]])
    assert proxy_score(prediction, proxy, confident, 0.75) == pytest.approx(1 / 3)
    assert proxy_score(prediction, proxy, confident, 0.001) is None
    error = torch.tensor([[[[0.5, 0.1, 0.2, 0.3]]]])
    # Pixel 0 points out of the right view (x - d < 0) and is left out.
    in_view = torch.tensor([[[[1.0, 0.5, 1.0, 2.0]]]])
    assert photometric_score(error, in_view) == pytest.approx((0.1 + 0.2 + 0.3) / 3)


def test_anchor_penalty_and_restore_by_hand():
    source = {"w": torch.zeros(1000)}
    params = {"w": torch.full((1000,), 2.0)}
    assert float(anchor_penalty(params, source)) == pytest.approx(4000.0)
    restore_fraction(params, source, 0.0)
    assert bool((params["w"] == 2).all())
    torch.manual_seed(0)
    restore_fraction(params, source, 0.25)
    assert 0.2 < float((params["w"] == 0).float().mean()) < 0.3
    restore_fraction(params, source, 1.0)
    assert bool((params["w"] == 0).all())


@pytest.mark.parametrize("loss", ["both", "photometric"])
def test_misled_weights_lose_to_the_frozen_reference_and_are_rolled_back(motorcycle_crop,
                                                                         loss):
    """With the check, the frame misled weights would have spoilt is predicted by the
    initial weights, which the adapter returns to; without it the spoilt frame is published.
    With the both loss the proxy score judges, with the photometric loss the photometric
    one."""
    left, right, truth = motorcycle_crop
    frozen = _frozen(left, right)
    known = np.isfinite(truth)

    off = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", adaptation_loss=loss, reference_check_every=0, **CONFIG))
    _mislead(off)
    spoilt = off.step(left, right)
    assert spoilt.reference_won is None and not spoilt.reset
    assert np.abs(spoilt.disparity - frozen)[known].mean() > 2

    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", adaptation_loss=loss, **CONFIG))
    _mislead(adapter)
    patience = adapter.config.reference_patience
    for _ in range(patience - 1):  # lost, the reference's prediction published, no rollback
        kept = adapter.step(left, right)
        assert kept.reference_won is True and not kept.reset
        assert np.abs(kept.disparity - frozen).max() < 1e-3
    result = adapter.step(left, right)
    assert result.reference_won is True and result.reset and not result.adapted
    assert "frozen-reference check" in result.collapse
    assert np.abs(result.disparity - frozen).max() < 1e-3
    assert adapter.reference_check.rollbacks == 1
    initial = OnlineAdapter.from_weights("synthetic").model.state_dict()
    assert all(torch.equal(value, initial[name])
               for name, value in adapter.model.state_dict().items())


def test_adapted_weights_that_do_not_lose_are_kept(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(adaptation_mode="full",
                                                                    **CONFIG))
    first = adapter.step(left, right)
    assert first.reference_won is False and first.adapted and not first.reset
    assert adapter.reference_check.checks == 1


def test_mad_checks_back_off_while_holding_and_a_misled_frame_is_checked_at_once(
        motorcycle_crop):
    """In MAD mode the checks thin out while the adapted weights win; weights that go wrong
    between two scheduled checks are judged on the next frame all the same (their score
    triggers the check), and that frame gets the reference's prediction."""
    left, right, _ = motorcycle_crop
    frozen = _frozen(left, right)
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="mad", **CONFIG))
    checked = [adapter.step(left, right).reference_won is not None for _ in range(8)]
    assert checked[0] and sum(checked) < 6, checked
    assert adapter.reference_check.triggers == 0
    while adapter.reference_check.due_in == 0:  # to a frame between scheduled checks
        adapter.step(left, right)
    _mislead(adapter)
    result = adapter.step(left, right)
    assert adapter.reference_check.triggers == 1
    assert result.reference_won is True and np.abs(result.disparity - frozen).max() < 1e-3
    # Full adaptation keeps checking every frame.
    full = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", **CONFIG))
    assert all(full.step(left, right).reference_won is not None for _ in range(4))


def test_the_frame_after_an_idle_step_is_checked_whatever_the_back_off(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="mad", **CONFIG))
    for _ in range(3):
        adapter.step(left, right)
    while adapter.reference_check.due_in == 0:  # to a frame between scheduled checks
        adapter.step(left, right)
    assert adapter.replay_step().adapted
    assert adapter.reference_check.due_in == 0
    assert adapter.step(left, right).reference_won is not None


def test_a_frame_that_does_not_adapt_never_publishes_nan(motorcycle_crop):
    """Adapted weights that are finite but overflow: the paused frame is predicted again by
    the initial weights, and the adapter returns to them."""
    left, right, _ = motorcycle_crop
    frozen = _frozen(left, right)
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(adaptation_mode="full",
                                                                    **CONFIG))
    assert adapter.step(left, right).adapted
    with torch.no_grad():
        adapter.model.refinement[12].weight.mul_(1e38)
    adapter.paused = True
    result = adapter.step(left, right)
    assert result.reset and "not finite" in result.collapse
    assert np.isfinite(result.disparity).all() and np.isfinite(result.confidence).all()
    assert np.abs(result.disparity - frozen).max() < 1e-3
    assert adapter.guard.resets == 1


def _displaced(left, right, **config):
    """A full-mode adapter with plain gradient descent, whose last refinement bias sits 0.01
    from its initial value; stepped once on the pair. Returns the bias after the step."""
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", optimizer="sgd", momentum=0.0, learning_rate=1e-3,
        reference_check_every=0, warmup_steps=0, collapse_guard=False, **CONFIG, **config))
    with torch.no_grad():
        adapter.model.refinement[12].bias += 0.01
    assert adapter.step(left, right).adapted
    return adapter.model.refinement[12].bias.detach().clone()


def test_the_anchor_pulls_displaced_weights_back_by_its_gradient(motorcycle_crop):
    """L2-SP adds weight x |w - w0|^2 to the loss: plain gradient descent at rate r moves a
    weight displaced by d by -r x 2 x weight x d more than without it."""
    left, right, _ = motorcycle_crop
    plain = _displaced(left, right)
    anchored = _displaced(left, right, anchor_weight=5.0)
    assert torch.allclose(anchored - plain, torch.full_like(plain, -1e-3 * 2 * 5.0 * 0.01),
                          atol=1e-6)


def test_a_full_restore_undoes_every_step(motorcycle_crop):
    left, right, _ = motorcycle_crop
    adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(
        adaptation_mode="full", restore_fraction=1.0, reference_check_every=0, **CONFIG))
    initial = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    assert adapter.step(left, right).adapted
    assert all(torch.equal(v, initial[k]) for k, v in adapter.model.state_dict().items())


def test_the_warm_up_scales_the_first_steps(motorcycle_crop):
    """With warmup_steps 4, plain gradient descent's first step is a quarter of the step
    without it."""
    left, right, _ = motorcycle_crop
    config = dict(adaptation_mode="full", optimizer="sgd", momentum=0.0, learning_rate=1e-4,
                  reference_check_every=0, **CONFIG)
    moves = []
    for warmup in (0, 4):
        adapter = OnlineAdapter.from_weights("synthetic", AdapterConfig(warmup_steps=warmup,
                                                                        **config))
        before = adapter.model.refinement[12].weight.detach().clone()
        adapter.step(left, right)
        moves.append(adapter.model.refinement[12].weight.detach() - before)
    assert torch.allclose(moves[1], moves[0] / 4, atol=1e-9, rtol=1e-4)
