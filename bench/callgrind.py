"""Instruction counts of a part of a Python process, per thread, under valgrind's callgrind.

Wall and CPU time move with the machine's mood; the instructions a piece of code executes do
not. A bench runs a helper process under ``valgrind --tool=callgrind --instr-atstart=no``: the
process counts nothing until it calls :meth:`Counter.start` and stops counting at
:meth:`Counter.stop` (callgrind's client requests ``CALLGRIND_START/STOP_INSTRUMENTATION``,
which act on every thread at once). With ``--separate-threads=yes`` callgrind writes one file
per thread at exit; :func:`thread_counts` reads their totals. A thread names itself in its
profile by calling :meth:`Counter.mark` while counting is on (a system call that nothing else
makes then, which the thread's profile names).

The client requests are C macros (``valgrind/callgrind.h``), so the helper compiles a small
shared library once with the system C compiler (cached under ``~/.cache/mlxnb-bench``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = r"""
#include <valgrind/callgrind.h>
void mlxnb_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void mlxnb_cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
int mlxnb_cg_running(void) { return RUNNING_ON_VALGRIND; }
"""
# A thread names itself by calling a system call wrapper that nothing else calls while counting:
# it shows in that thread's profile as a function of its own.
MARKS = {"main": "getsid", "worker": "getpgid"}
ROLES = tuple(MARKS)


def _library() -> Path:
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    folder = Path.home() / ".cache" / "mlxnb-bench"
    library = folder / f"callgrind-requests-{digest}.so"
    if library.exists():
        return library
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("--instructions needs a C compiler (cc) and valgrind's headers")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"callgrind-requests-{digest}.c"
    source.write_text(SOURCE)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", str(partial), str(source)], check=True
    )
    partial.replace(library)
    return library


class Counter:
    """Switches callgrind's counting on and off from inside the measured process."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(str(_library()))
        if not self._lib.mlxnb_cg_running():
            raise RuntimeError("not running under valgrind")

    def start(self) -> None:
        """Count every thread's instructions from now on."""
        self._lib.mlxnb_cg_start()

    def stop(self) -> None:
        """Stop counting (every thread)."""
        self._lib.mlxnb_cg_stop()

    def mark(self, role: str) -> int:
        """Name the calling thread ``role`` in its profile (call it while counting)."""
        getattr(os, MARKS[role])(0)
        return 0


def command(out_file: Path, argv: list[str]) -> list[str]:
    """The valgrind command that runs ``python argv`` with counting off until it is switched on."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("--instructions needs valgrind (apt-get install valgrind)")
    return [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        "--dump-instr=no",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        *argv,
    ]


def child_environment() -> dict[str, str]:
    """The helper's environment: one BLAS thread (no spinning helpers), fixed string hashing."""
    one_thread = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # either OpenBLAS build
    return {**os.environ, **one_thread, "PYTHONHASHSEED": "0"}


_TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def thread_counts(out_file: Path) -> dict[str, int]:
    """Instructions per thread from callgrind's files for ``out_file`` (``{out_file}-NN``).

    Returns:
        ``{name: instructions}``: a thread that called :meth:`Counter.mark` is named by its
        role, the others ``thread-NN`` (callgrind's thread number); threads that ran no
        counted instruction are left out.
    """
    counts: dict[str, int] = {}
    for path in sorted(out_file.parent.glob(out_file.name + "-*")):
        text = path.read_text(errors="replace")
        found = _TOTALS.findall(text)
        total = int(found[-1]) if found else 0
        if not total:
            continue
        roles = [role for role in ROLES if f") os_{MARKS[role]}\n" in text]
        name = roles[0] if len(roles) == 1 else f"thread-{path.name.rsplit('-', 1)[1]}"
        counts[name] = counts.get(name, 0) + total
    return counts


def tolerate_rlimit() -> None:
    """Let ``resource.setrlimit`` fail quietly for open files (call before importing mlx-lm).

    mlx-lm raises the open-file limit to ``(2048, 4096)`` on import; under valgrind, which
    keeps some descriptors for itself, a process may not change the hard limit, and the import
    would fail. The bench opens a handful of files; the limit it starts with is plenty.
    """
    import resource

    setrlimit = resource.setrlimit

    def lenient(which: int, limits: tuple[int, int]) -> None:
        try:
            setrlimit(which, limits)
        except (ValueError, OSError):
            if which != resource.RLIMIT_NOFILE:
                raise

    resource.setrlimit = lenient
