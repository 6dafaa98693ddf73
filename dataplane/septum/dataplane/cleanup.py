"""Cleanup steps for `contextlib.ExitStack`: every step runs, last registered first, even
when one before it failed, and the first error is the one raised (later failures are noted
on it).  The demo, the benchmarks and tests tear down namespaces, programs and pins this
way, so one failed step never leaves the others' resources behind."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

# an ExitStack.push() callback: (exception type, exception, traceback) -> suppress it?
ExitCallback = Callable[
    [type[BaseException] | None, BaseException | None, TracebackType | None], bool
]


def cleanup_step(
    step: Callable[[], object], on_failure: Callable[[Exception], object] | None = None
) -> ExitCallback:
    """An ExitStack callback running `step`.  A failure is passed to `on_failure` first;
    then, while an earlier error propagates, it is noted on that error (which stays the
    one raised), else it is raised itself."""

    def run_step(
        _type: type[BaseException] | None, error: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        try:
            step()
        except Exception as failure:
            if on_failure is not None:
                on_failure(failure)
            if error is None:
                raise
            error.add_note(f"cleanup also failed: {failure!r}")
        return False

    return run_step
