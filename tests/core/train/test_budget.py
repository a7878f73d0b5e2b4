"""Planning a run into a time budget, with a fake clock."""

from __future__ import annotations

from simclr_cli.core.choices import Stem
from simclr_cli.core.train.budget import MODEL_SAVE_SHARE, TimeBudget, budget_stem


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(budget: TimeBudget, clock: FakeClock, *, start_up: float, per_step) -> int:
    """Simulate the training loop; return the steps taken.

    ``per_step`` is the time of every step, or a function of the step index giving it.
    """
    step_time = per_step if callable(per_step) else (lambda _: per_step)
    clock.now += start_up
    step, total = 0, 10_000
    while step < total:
        clock.now += step_time(step)
        step += 1
        total = budget.plan(step, total)
    return step


def test_time_budget__plan_fills_the_budget_without_crossing_it():
    clock = FakeClock()
    budget = TimeBudget(265, clock=clock)
    steps = _run(budget, clock, start_up=5.0, per_step=0.5)
    # 265 s minus 5 s start-up, minus the reserve for saving, at 0.5 s a step.
    assert clock.now <= 265 - budget.reserve + 1e-9
    assert steps >= (265 - 5 - budget.reserve) / 0.5 - 2


def test_time_budget__replan_corrects_a_slowdown_and_hard_stop_holds():
    clock = FakeClock()
    budget = TimeBudget(100, clock=clock)
    # The run slows down by half after 30 steps (another process starts).
    _run(budget, clock, start_up=1.0, per_step=lambda step: 0.2 if step < 30 else 0.3)
    assert clock.now <= 100 - budget.reserve + 1e-9
    assert clock.now >= 100 - budget.reserve - 2 * 0.3


def test_time_budget__slow_start_does_not_leave_time_unused():
    clock = FakeClock()
    budget = TimeBudget(265, clock=clock)
    # The first 40 steps run at half speed (another program is finishing), then full speed.
    _run(budget, clock, start_up=3.0, per_step=lambda step: 0.8 if step < 40 else 0.4)
    # The plan follows the speed since the last re-plan, so the run ends within a few steps of
    # the deadline instead of stopping early on the slow start's average.
    assert 265 - budget.reserve - 0.4 * 6 <= clock.now <= 265 - budget.reserve + 1e-9


def test_time_budget__max_steps_caps_the_plan():
    clock = FakeClock()
    budget = TimeBudget(1000, clock=clock, max_steps=50)
    assert _run(budget, clock, start_up=0.0, per_step=0.1) == 50


def test_budget_stem__short_budget_picks_the_fast_stem():
    assert budget_stem(Stem.auto, 265) is Stem.imagenet
    assert budget_stem(Stem.auto, None) is Stem.auto
    assert budget_stem(Stem.auto, 7200) is Stem.auto
    assert budget_stem(Stem.cifar, 265) is Stem.cifar


def test_time_budget__counts_from_the_given_start():
    clock = FakeClock()
    # The process started 10 s before the budget object (start-up, imports, the header scan).
    budget = TimeBudget(100, clock=clock, elapsed=10.0)
    _run(budget, clock, start_up=0.0, per_step=0.5)
    assert clock.now <= 90 - budget.reserve + 1e-9
    assert clock.now >= 90 - budget.reserve - 2 * 0.5


def test_time_budget__reserve_follows_the_measured_finishing_cost():
    budget = TimeBudget(100, clock=FakeClock())
    before = budget.reserve
    budget.note_checkpoint(2.0)
    budget.note_checkpoint(1.0)  # The slowest checkpoint is planned for.
    budget.note_evaluation(3.0)
    # The final checkpoint, the model file (a share of a checkpoint) and the last evaluation.
    assert budget.reserve == before + 2.0 * (1 + MODEL_SAVE_SHARE) + 3.0


def test_time_budget__left_out_time_is_not_speed():
    clock = FakeClock()
    budget = TimeBudget(265, clock=clock)
    clock.now, step = 1.0, 1
    budget.plan(step, 10_000)
    clock.now += 5.0  # An extra checkpoint after the first step: not a cost of every step.
    budget.leave_out(5.0)
    total = 10_000
    while step < 20:
        clock.now += 0.5
        step += 1
        total = budget.plan(step, total)
    assert budget.seconds_per_step(step, clock.now) == 0.5


def test_time_budget__speed_up_after_the_last_plan_is_used():
    clock = FakeClock()
    budget = TimeBudget(100, clock=clock)
    # After 96% of the first plan's steps the steps take half as long: the plan made at 95%
    # leaves time over, which steps added at the end take up.
    _run(budget, clock, start_up=1.0, per_step=lambda step: 0.4 if step < 226 else 0.2)
    assert budget.planned_total is not None
    assert 100 - budget.reserve - 0.2 * (1 + 1.15) <= clock.now <= 100 - budget.reserve + 1e-9
