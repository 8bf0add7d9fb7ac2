"""No credit for calling the answer: while a checker runs the learner's function, the functions the
exercise asks them to write raise instead of answering.

An exercise names what it forbids with :class:`Forbid`: the library's own function (``box_iou`` for
the IoU exercise), its torchvision twin (``torchvision.ops.box_iou``), and the library functions that
contain the answer (``detect`` contains NMS). The checker passes it to :func:`harness.run`, which
runs each call of the learner's function inside :class:`watching`. A call of a forbidden function
anywhere inside, directly, through an alias (``iou = box_iou``), a lambda or another library
function, ends the case with "this exercise asks you to write ... yourself". The helpers the
exercise permits (``Forbid.allowed``, also said in the exercise's text) stay allowed, and so do the
learner's own functions of the same name: only the library's code objects are recognised.

How it works: ``sys.setprofile`` sees every Python call (``call`` events, matched by code object)
and every call of a built-in (``c_call`` events, matched by identity, e.g. the C kernel behind
``torchvision.ops.nms``). A profile function that raises is switched off by Python, so the trip is
also recorded, and the case fails even if the learner's code catches the exception; a learner's
function that switches the profile off fails as well.

The tests check the checkers against the library's own functions inside :func:`reference_allowed`.
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

FORBIDDEN: dict[str, "Forbid"] = {}  # checker name -> what its exercise forbids (filled as the checkers load)

_trusted = False  # inside reference_allowed(): the tests run the references themselves through the checkers


class Delegated(Exception):
    """Raised inside the learner's function when it calls a function that its exercise forbids."""


@dataclass
class Forbid:
    """What one exercise asks the learner to write (``task``), the functions that would answer it for
    them, and the helpers that stay allowed (a sentence, shown in the failure message)."""

    checker: str
    task: str
    functions: tuple
    allowed: str
    _codes: dict = field(init=False, repr=False)
    _builtins: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._codes, self._builtins = {}, {}
        for function in self.functions:
            target = _target(function)
            code = getattr(target, "__code__", None)
            if code is not None:
                self._codes[code] = _name_of(target)
            else:
                self._builtins[id(target)] = (target, _name_of(function))
        FORBIDDEN[self.checker] = self

    def covers(self, value: Any) -> bool:
        """Is ``value`` one of the forbidden functions, or a class with one as a method?"""
        members = vars(value).values() if inspect.isclass(value) else [value]
        return any(callable(m) and getattr(_target(m), "__code__", None) in self._codes for m in members)

    def names(self) -> list[str]:
        return sorted(set(self._codes.values()) | {name for _, name in self._builtins.values()})

    def rule_text(self) -> str:
        """The paragraph the exercise's text ends with (tests/test_exercises.py keeps the two the same)."""
        public = [name for name in self.names() if not any(part.startswith("_") for part in name.split("."))]
        shown = ", ".join(f"`{name}`" for name in public[:4])
        more = " and the library functions that contain the answer" if len(self.names()) > 4 else ""
        return (f"**Write it yourself.** While the check runs, a call of {shown}{more} fails it: they would write "
                f"{self.task} for you. Allowed: {self.allowed}.")

    def message(self, called: str) -> str:
        return (f"your function called `{called}`, but this exercise asks you to write {self.task} yourself. "
                f"Hint: allowed here: {self.allowed}")


def _target(function: Any) -> Any:
    """The function whose code runs when ``function`` is called (methods and decorators unwrapped)."""
    return inspect.unwrap(getattr(function, "__func__", function))


def _name_of(function: Any) -> str:
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
    return f"{module}.{name}" if module else name


@contextlib.contextmanager
def reference_allowed() -> Iterator[None]:
    """Switch the tripwire off, for tests that pass the library's own function to a checker."""
    global _trusted
    previous, _trusted = _trusted, True
    try:
        yield
    finally:
        _trusted = previous


class watching:
    """``with watching(forbid) as watch:`` runs the block with ``forbid``'s functions tripped;
    afterwards ``watch.failure()`` is the failure message, or None if no forbidden function was called."""

    def __init__(self, forbid: Optional[Forbid]) -> None:
        self.forbid, self.called, self.switched_off = forbid, None, False
        self._previous: Any = None

    def __enter__(self) -> "watching":
        if self.forbid is not None and not _trusted:
            self._previous = sys.getprofile()
            sys.setprofile(self._profile)
        else:
            self.forbid = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.forbid is not None:
            self.switched_off = self.called is None and sys.getprofile() != self._profile
            sys.setprofile(self._previous)

    def failure(self) -> Optional[str]:
        if self.called is not None:
            return self.forbid.message(self.called)
        if self.switched_off:
            return ("your function switched off the check's call tracing (sys.setprofile). Hint: leave "
                    "sys.setprofile alone and write the function with the allowed helpers")
        return None

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            name = self.forbid._codes.get(frame.f_code)
        elif event == "c_call":
            found = self.forbid._builtins.get(id(arg))
            name = found[1] if found is not None and found[0] is arg else None
        else:
            return
        if name is not None:
            self.called = self.called or name
            raise Delegated(self.forbid.message(name))
