"""Denormal floats flushed to zero in the threads that run models (x86-64 Linux).

A masked attention score (a padded token's, or another input's in a packed row: packing.py) goes through
Softmax's exp as a value so small that the CPU computes it as a denormal float, and x86 cores take a slow
microcode path for every such value: onnxruntime's Softmax over scores of MiniLM's shape (8 x 12 x 42 x
42, 70% masked, one thread) took 1.26 ms, against 0.16 ms unmasked or flushed. With the SSE control
register's flush-to-zero (FTZ) and denormals-are-zero (DAZ) bits set, those values are 0 at full speed; a
denormal (below ~1.2e-38 in float32) is far under what any vector's rounding keeps, so vectors do not
change beyond rounding.

onnxruntime sets these bits only in its own thread pools and the thread that opens a process's first
session (`session.set_denormal_as_zero`), not in the threads that call `run` with one intra-op thread, as
our workers do. The control register is per thread, so each runner sets it in the calling thread; glibc's
`fesetenv` installs the MXCSR word of the environment it is given. Elsewhere this is a no-op.

Imports no Django and no app.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
import threading

FTZ = 0x8000  # MXCSR bit 15: results that would be denormal are 0
DAZ = 0x0040  # MXCSR bit 6: denormal inputs are read as 0
_MXCSR_WORD = 7  # glibc's x86-64 fenv_t: the x87 environment (7 x 32 bits), then MXCSR
_state = threading.local()


def _libm() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


_LIBM = _libm()


def mxcsr() -> int | None:
    """This thread's MXCSR word (None where it cannot be read: not x86-64 Linux)."""
    if _LIBM is None:
        return None
    env = (ctypes.c_uint32 * 8)()
    if _LIBM.fegetenv(env) != 0:
        return None
    return int(env[_MXCSR_WORD])


def flush_denormals(enabled: bool = True) -> bool:
    """Set (or clear) FTZ and DAZ for the calling thread; whether the thread now has the asked setting.

    Cheap after the first call in a thread (a thread-local check), so runners call it on every batch.
    """
    if getattr(_state, "enabled", None) is enabled:
        return True
    if _LIBM is None:
        return False
    env = (ctypes.c_uint32 * 8)()
    if _LIBM.fegetenv(env) != 0:
        return False
    env[_MXCSR_WORD] = (env[_MXCSR_WORD] | FTZ | DAZ) if enabled else (env[_MXCSR_WORD] & ~(FTZ | DAZ))
    if _LIBM.fesetenv(env) != 0:
        return False
    _state.enabled = enabled
    return True
