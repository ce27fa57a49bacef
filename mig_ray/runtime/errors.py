"""The error a Ray task raised, out of Ray's wrappers.

`ray.get` on a failed task raises RayTaskError(Cause): an instance of both, whose text is the
remote traceback. A Ray Data UDF's error comes as RayTaskError(UserCodeException) around the user's
own. The user must read the task's own one-line message (the file, line or field it names), so the
stages and the CLI unwrap it here.
"""

from __future__ import annotations

import sys


def task_cause(e: BaseException) -> BaseException:
    """The innermost exception a task raised (e itself when Ray did not wrap it). Ray is not
    imported for this: an exception of a process that never imported Ray is never Ray's."""
    if "ray" not in sys.modules:
        return e
    from ray.exceptions import RayTaskError, UserCodeException

    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, RayTaskError) and isinstance(getattr(e, "cause", None), BaseException) \
                and e.cause is not e:
            e = e.cause
        elif isinstance(e, UserCodeException) and e.__cause__ is not None:
            e = e.__cause__
        else:
            break
    return e
