"""The error a Ray task raised, out of Ray's wrappers.

`ray.get` on a failed task raises RayTaskError(Cause): an instance of both, whose text is the
remote traceback. A Ray Data UDF's error comes as RayTaskError(UserCodeException) around the user's
own. The user must read the task's own one-line message (the file, line or field it names), so the
stages and the CLI unwrap it here.
"""

from __future__ import annotations

import builtins
import re
import sys

from mig_ray import errors

# the last line of a remote traceback: `module.Name: message`
_LAST = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*): (.+)$")
_ERRNO = re.compile(r"\[Errno (\d+)\]")


def task_cause(e: BaseException) -> BaseException:
    """The innermost exception a task raised (e itself when Ray did not wrap it). Ray is not
    imported for this: an exception of a process that never imported Ray is never Ray's."""
    if "ray" not in sys.modules:
        return e
    from ray.exceptions import RayTaskError, UserCodeException

    seen: set[int] = set()
    text = ""
    while id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, RayTaskError) and isinstance(getattr(e, "cause", None), BaseException) \
                and e.cause is not e:
            text = text or str(e)  # the remote traceback (a dual instance's own attributes are the cause's)
            e = e.cause
        elif isinstance(e, UserCodeException) and e.__cause__ is not None:
            e = e.__cause__
        else:
            break
    if isinstance(e, UserCodeException):  # Ray Data sends the UDF's error only as traceback text
        return from_traceback(text) or e
    return e


def from_traceback(text: str) -> BaseException | None:
    """The last error a remote traceback names that a user can cause (mig_ray's own errors, an
    OSError with its errno, e.g. a full disk), rebuilt; None when it names none (Ray Data's own
    UserCodeException line after it is passed over)."""
    for line in reversed(text.strip().splitlines()):
        m = _LAST.match(line.strip())
        if m is None:
            continue
        name, msg = m.groups()
        own = getattr(errors, name, None)
        if isinstance(own, type) and issubclass(own, Exception) and own.__module__ == errors.__name__:
            return own(msg)
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, OSError):
            code = _ERRNO.findall(msg)
            return builtin(int(code[-1]), msg.split("] ")[-1]) if code else builtin(msg)
    return None
