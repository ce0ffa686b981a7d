"""Named parts of a run: the seam through which benchmarks time the engine without patching it.

The engine wraps each part ("train data", "train forward", "train backward", "train optimizer",
"eval pass", "eval data", "eval forward", "eval outputs", "eval proposals", "pseudo pass",
"checkpoint save", ...) in `timed(part)`; some parts hold finer ones ("train gather" and "eval
gather" inside "train data" and "eval data": the gather of the batch where the features are).
A benchmark installs a timer with `set_timer` (bench/profile_run.py, bench/bench_pipeline.py).
With no timer a part costs one check. Finer detail (per kernel, per batch) is torch.profiler's
job.
"""
import contextlib
import functools

_timer = None                           # set_timer's timer; None: a part costs one check
_UNTIMED = contextlib.nullcontext()


def set_timer(timer):
    """Install `timer(part, context) -> context manager`, entered around every named part of a
    run (it may also open torch.profiler.record_function ranges); None removes it.
    Returns the timer it replaces."""
    global _timer
    previous, _timer = _timer, timer
    return previous


def timed(part, **context):
    """Context manager: a named part of a run ("train forward", "eval pass", ...).
    context: what a timer may look at (a forward's model, batch, step and args; background=True
    for a part that runs in a worker thread, concurrently with the parts of the main thread, so
    a timer adding parts up to the wall time leaves it out)."""
    return _UNTIMED if _timer is None else _timer(part, context)


def timed_calls(part):
    """Decorator: every call of the function is the named part `part`."""
    def decorate(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            with timed(part):
                return function(*args, **kwargs)
        return call
    return decorate


def timed_items(iterable, part):
    """The items of `iterable`, the wait for each one a named part (e.g. the loader's batches)."""
    iterator, done = iter(iterable), object()
    while True:
        with timed(part):
            item = next(iterator, done)
        if item is done:
            return
        yield item
