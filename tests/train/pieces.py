"""Run a trainer the way a user with a time budget of 0 would: one step per stage and call, again and again."""

from psd_gs.train.base import Paused


def run_in_pieces(make_trainer, limit: int = 10):
    """(what ``make_trainer().run()`` returns once it finishes, the number of pauses before that); every pause
    must tell the user how to resume."""
    pauses = 0
    while True:
        try:
            return make_trainer().run(), pauses
        except Paused as paused:
            assert "run the same command again" in str(paused)
            pauses += 1
            assert pauses < limit
