"""A run cut by a cancel after a given step (its checkpoint is there to resume from): the resume tests share it."""

from psd_gs.run.loop import CancelToken, Progress, Result, generate


def cut_at(cfg, step: int) -> Result:
    """``generate(cfg)`` cancelled once ``step`` steps are done; the partial Result it writes."""
    cancel, first = CancelToken(), None
    for event in generate(cfg, cancel=cancel):
        if isinstance(event, Progress) and event.step == step:
            cancel.set()
        if isinstance(event, Result):
            first = event
    return first
