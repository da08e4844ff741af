"""The lateness check's probe ladder (transforms/lateness.py `_arm`): re-arming only the levels a horizon passed
leaves the same timers standing as arming the whole ladder again, and each level is the next multiple of its
step above the horizon."""

from hypothesis import given, settings, strategies as st

from transforms.lateness import _CEILING_MS, _FLOOR_MS, PROBE_STEP_MS, _arm


class _Probe:
    """The timers a DoFn's TimerParam holds: one per dynamic tag, a later set replacing an earlier one."""

    def __init__(self):
        self.timers, self.sets = {}, 0

    def set(self, timestamp, dynamic_timer_tag):
        self.timers[dynamic_timer_tag] = timestamp.micros // 1_000
        self.sets += 1


def _whole_ladder(horizon_ms: int) -> dict:
    """Written out plainly: level j at the smallest multiple of step * 2**j above the horizon, within time."""
    ladder, j = {}, 0
    while (PROBE_STEP_MS << j) <= _CEILING_MS - _FLOOR_MS:
        size = PROBE_STEP_MS << j
        at = horizon_ms - horizon_ms % size + size
        if at > _CEILING_MS:
            break
        ladder[str(j)] = at
        j += 1
    return ladder


def test_the_first_arming_from_the_floor_sets_the_whole_ladder_up_to_the_end_of_time():
    probe = _Probe()
    _arm(probe, _FLOOR_MS)
    assert probe.timers == _whole_ladder(_FLOOR_MS)
    assert min(probe.timers.values()) == _FLOOR_MS + PROBE_STEP_MS  # the next step: within a step of the watermark
    assert max(probe.timers.values()) <= _CEILING_MS


def test_a_step_forward_re_arms_only_the_levels_it_passed():
    probe = _Probe()
    horizon = 1_796_000_000_000  # a multiple of 2**5 steps: the next step crosses level 0 only
    _arm(probe, horizon)
    probe.sets = 0
    _arm(probe, horizon + PROBE_STEP_MS, horizon)
    assert probe.sets == 1
    assert probe.timers == _whole_ladder(horizon + PROBE_STEP_MS)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 4_000_000_000) | st.just(_FLOOR_MS // PROBE_STEP_MS),
       moves=st.lists(st.integers(1, 1 << 40), min_size=1, max_size=30))
def test_re_armed_ladders_equal_whole_ones_after_any_moves(start, moves):
    probe, horizon = _Probe(), start * PROBE_STEP_MS
    _arm(probe, horizon)
    for move in moves:
        reached = min(horizon + move * PROBE_STEP_MS, _CEILING_MS)
        if reached <= horizon:
            break
        _arm(probe, reached, horizon)
        horizon = reached
        standing = {tag: at for tag, at in probe.timers.items() if at > horizon}  # what has not fired yet
        assert standing == _whole_ladder(horizon)
