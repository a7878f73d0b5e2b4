"""Pretraining that fits a time budget: ``simclr pretrain --time-budget 265s``.

The run measures its own speed over the first steps, then fixes the number of steps so that the
learning-rate schedule (linear warm-up, then cosine decay to zero) completes and the model is
saved before the budget runs out. The schedule is a function of the step and the total
(``optim.learning_rate_at``), so the loop only has to swap in the planned total.

Later re-plans (at a quarter, half, 70%, 85% and 95% of the planned steps) correct the estimate
with the speed since the previous plan, so that a slow start (workers filling the image cache,
another program finishing) or a slowdown later does not leave time unused or overrun the budget;
the speed then includes the online monitor's evaluations and epoch boundaries. A hard stop ends
the loop if a step would cross the deadline anyway, and at the planned end a step is added while
one more fits, so the last step ends within one step of the deadline whichever way the speed
moved after the last plan.

The budget bounds the whole command: its clock starts when the process started (Python start-up,
imports and the header scan count), and what follows the last step (the final checkpoint, the
monitor's last evaluation, the model file, the process's exit) is planned from measurements of
those same operations during the run, not reserved by a guess.
"""

from __future__ import annotations

import math
import time

from ..choices import Stem

#: Below this budget, ``--stem auto`` keeps the ImageNet stem even for small images.
FAST_STEM_MAX_BUDGET = 3600.0

#: Re-plan when these shares of the planned steps are done.
REPLAN_FRACTIONS = (0.25, 0.5, 0.7, 0.85, 0.95)
#: A re-plan trusts the speed since the previous plan once it spans this many steps.
MIN_WINDOW_STEPS = 5
#: The model file is written after the last checkpoint: its cost as a share of a checkpoint's
#: (the weights alone, against weights, optimiser state and position; measured for resnet18 with
#: LARS: 45 MB against 90 MB).
MODEL_SAVE_SHARE = 0.6
#: Seconds from the model file written to the process gone (rendering the result, reaping the
#: loader's workers, the exit handlers). The console script skips the interpreter's teardown
#: (``cli/_exit.py``), which took 1.4 s of a 2-core CPU and varied with the objects alive; what is
#: left measured 0.10 s there (benchmarks/RESULTS.md), and this keeps 2.5x that for slower CPUs.
EXIT_SECONDS = 0.25
#: Kept free besides the measured finishing cost, as a share of the budget.
SAFETY_SHARE = 0.002
#: The last step may take this much longer than the mean step (measured: up to 10% on a shared
#: 2-core CPU), so the plan leaves that share of a step free.
STEP_SPREAD = 0.15


def budget_stem(stem: Stem, time_budget: float | None) -> Stem:
    """The stem ``auto`` means under a time budget.

    The CIFAR stem keeps 32 px images at full resolution through the first stage, which costs
    about 10x the compute of the ImageNet stem (on the 2-core CPU of benchmarks/RESULTS.md: 41
    against 460 img/s for ResNet-18 at 32 px). Within a short budget the ImageNet stem sees ten
    times more images and learns more, so ``auto`` picks it for budgets under an hour; without a
    budget, or with a long one, ``auto`` keeps its size-based choice.
    """
    if stem is Stem.auto and time_budget is not None and time_budget < FAST_STEM_MAX_BUDGET:
        return Stem.imagenet
    return stem


class TimeBudget:
    """Plans the step count of a run that must end within ``seconds``.

    Args:
        seconds: The whole budget, from the process's start to its exit.
        elapsed: Seconds of the budget already spent when the object is made (the loop passes
            the time since the process started, ``_runtime.command_elapsed``).
        calibration_seconds: Speed is measured over at least this long (and 3 steps) before
            the first plan; the default is 4% of the budget, between 3 and 60 s.
        max_steps: Never plan more steps than this (``--max-steps``), when given.
        clock: Source of time in seconds (a parameter for tests).
    """

    def __init__(
        self,
        seconds: float,
        *,
        elapsed: float = 0.0,
        calibration_seconds: float | None = None,
        max_steps: int | None = None,
        clock=time.perf_counter,
    ):
        self.max_steps = max_steps
        self.seconds = float(seconds)
        self.clock = clock
        self.started = clock() - elapsed
        self.deadline = self.started + self.seconds
        # What follows the last step, as measured so far (see note_checkpoint, note_evaluation).
        self.checkpoint_seconds = 0.0
        self.evaluation_seconds = 0.0
        if calibration_seconds is None:
            calibration_seconds = min(60.0, max(3.0, 0.04 * self.seconds))
        self.calibration_seconds = calibration_seconds
        self.first_step_time: float | None = None
        self.first_step = 0
        self.planned_total: int | None = None
        self.replans_left: tuple[float, ...] = REPLAN_FRACTIONS
        self.window_step = 0
        self.window_time = 0.0
        self.per_step: float | None = None

    @property
    def reserve(self) -> float:
        """Seconds kept after the last step: the measured finishing cost and a small margin.

        The last step is followed by a checkpoint, the monitor's last evaluation (when there is
        a monitor), the model file and the process's exit.
        """
        finishing = self.checkpoint_seconds * (1 + MODEL_SAVE_SHARE) + self.evaluation_seconds
        return finishing + EXIT_SECONDS + SAFETY_SHARE * self.seconds

    def note_checkpoint(self, seconds: float) -> None:
        """Record how long writing a checkpoint took; the final one is planned from the slowest."""
        self.checkpoint_seconds = max(self.checkpoint_seconds, seconds)

    def leave_out(self, seconds: float) -> None:
        """Leave time that does not recur (the first, extra checkpoint) out of the speed."""
        if self.first_step_time is not None and self.planned_total is None:
            self.first_step_time += seconds

    def note_evaluation(self, seconds: float) -> None:
        """Record how long a monitor evaluation took; the last one is planned from the latest."""
        self.evaluation_seconds = seconds

    def seconds_per_step(self, step: int, now: float) -> float:
        """Time a step takes now: the average since the last plan, or since the first step.

        The first step carries start-up costs and is never counted. Once a plan exists, the speed
        of the steps since that plan replaces the running average when there are enough of them,
        so a change of speed is followed instead of averaged away.
        """
        if self.per_step is not None and step - self.window_step >= MIN_WINDOW_STEPS:
            return (now - self.window_time) / (step - self.window_step)
        if self.per_step is not None:
            return self.per_step
        assert self.first_step_time is not None, "plan() times the first step before any other"
        return (now - self.first_step_time) / max(1, step - self.first_step)

    def plan(self, step: int, total_steps: int) -> int:
        """The total step count after ``step`` steps are done; call once per step.

        Args:
            step: Steps completed.
            total_steps: The current plan (before the first plan: any provisional count).

        Returns:
            The total to use from now on; ``step`` itself means "stop now".
        """
        total = self._plan(step, total_steps)
        return total if self.max_steps is None else min(total, self.max_steps)

    def _plan(self, step: int, total_steps: int) -> int:
        now = self.clock()
        if self.first_step_time is None:
            # The first step carries worker start-up and allocator warm-up: measure after it.
            self.first_step_time, self.first_step = now, step
            return total_steps if total_steps > step else step + 1
        per_step = self.seconds_per_step(step, now)
        # A step that would cross the deadline is not taken, whatever the plan says.
        if now + per_step * (1 + STEP_SPREAD) > self.deadline - self.reserve:
            self.planned_total = step
            return step
        measured = now - self.first_step_time
        if self.planned_total is None:
            if measured < self.calibration_seconds or step - self.first_step < 3:
                return total_steps if total_steps > step else step + 1
            return self._replan(step, now, per_step)
        if self.replans_left and step >= self.replans_left[0] * self.planned_total:
            self.replans_left = self.replans_left[1:]
            return self._replan(step, now, per_step)
        if step >= self.planned_total:
            # The plan rounds down and the speed can rise after the last re-plan: one more step
            # is taken whenever it fits (the check above), so the run ends at the first step
            # after which another would not fit, not a step or more earlier.
            self.planned_total = step + 1
        return self.planned_total

    def _replan(self, step: int, now: float, per_step: float) -> int:
        self.per_step, self.window_step, self.window_time = per_step, step, now
        remaining = self.deadline - self.reserve - now - STEP_SPREAD * per_step
        self.planned_total = step + max(1, math.floor(remaining / per_step))
        return self.planned_total

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self.clock() - self.started
