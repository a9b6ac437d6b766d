"""The supervisor's restart pauses (app.procs.supervisor.Restarts): double from the first pause
up to the cap while a process keeps dying, from the first again once a run lasted long enough."""

from __future__ import annotations

from app.procs.supervisor import RESTART_PAUSE_MAX_S, RESTART_PAUSE_S, STAYED_UP_S, Restarts


def test_pauses_double_up_to_the_cap_while_a_process_dies_at_once() -> None:
    restarts, now, pauses = Restarts(started=0.0), 0.0, []
    for _ in range(10):
        now += 1.0  # it ran one second
        pauses.append(restarts.died(now))
        assert restarts.due == now + pauses[-1]
        now, restarts.started, restarts.due = restarts.due, restarts.due, None  # started again
    assert pauses[:4] == [
        RESTART_PAUSE_S,
        2 * RESTART_PAUSE_S,
        4 * RESTART_PAUSE_S,
        8 * RESTART_PAUSE_S,
    ]
    assert max(pauses) == RESTART_PAUSE_MAX_S and pauses[-1] == RESTART_PAUSE_MAX_S
    assert pauses == sorted(pauses)


def test_a_run_that_lasted_starts_again_from_the_first_pause() -> None:
    restarts = Restarts(started=0.0)
    for t in (1.0, 3.0, 7.0):
        restarts.died(t)
        restarts.started = restarts.due or t
    assert restarts.in_a_row == 3
    assert restarts.died(restarts.started + STAYED_UP_S) == RESTART_PAUSE_S
    assert restarts.in_a_row == 1
