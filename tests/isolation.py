"""Run calls that could crash the interpreter (a segfault in torch's or our kernel) in a child process.

One child serves many calls, so torch is imported once. A call that kills the child raises
ChildCrashed for that call only; the next call starts a fresh child. Functions are sent by reference
(module and name), so they must be importable module-level functions of a test module; arguments and
results travel by pickle, which keeps a tensor's strides.
"""

import multiprocessing
import os
import sys
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


class ChildCrashed(RuntimeError):
    pass


def _serve(conn):
    sys.path[:0] = [_HERE, _ROOT]
    import importlib

    while True:
        try:
            module, name, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            result = True, getattr(importlib.import_module(module), name)(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (sent back, raised in the parent)
            result = False, (type(e).__name__, str(e), traceback.format_exc())
        conn.send(result)


class Child:
    def __init__(self, timeout=300):
        self.timeout = timeout
        self._proc = None

    def _start(self):
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._proc = context.Process(target=_serve, args=(child_end,), daemon=True)
        self._proc.start()
        child_end.close()

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in the child: its result, its exception (as RuntimeError naming the type and
        message, or the same type for the common builtin ones), or ChildCrashed."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((fn.__module__, fn.__name__, args, kwargs))
        try:
            if not self._conn.poll(self.timeout):
                self._proc.kill()
                self._proc = None
                raise ChildCrashed(f"{fn.__name__} did not finish in {self.timeout} s")
            ok, value = self._conn.recv()
        except (EOFError, ConnectionError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._proc = None
            raise ChildCrashed(f"{fn.__name__} crashed the child process (exit code {code})") from None
        if not ok:
            kind, message, trace = value
            error = {"RuntimeError": RuntimeError, "ValueError": ValueError, "TypeError": TypeError}.get(kind)
            raise (error(message) if error else RuntimeError(f"{kind}: {message}\n{trace}"))
        return value

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            self._conn.close()
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None
