"""`rlaif` ends on its own last line: with triton loaded (a command that trained or served in-process),
the interpreter's teardown, where triton's nanobind bindings print their "leaked" lines, is skipped
after the output is flushed and the atexit handlers have run."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys
import flows.cli as cli

class Teardown:  # stands in for triton's bindings: talks while the interpreter shuts down
    def __del__(self):
        print("leaked 4 instances!", file=sys.stderr)

NOISY = Teardown()
atexit.register(lambda: print("atexit ran"))
if {load_triton}:
    sys.modules.setdefault("triton", type(sys)("triton"))
cli.main = lambda: (print("done: the command's own last line"), 3)[1]
cli.entry()
"""


def run(load_triton: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(load_triton=load_triton)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_with_triton_loaded_the_last_line_is_ours():
    p = run(True)
    assert p.returncode == 3
    assert p.stdout.splitlines()[-2:] == ["done: the command's own last line", "atexit ran"]
    assert "leaked" not in p.stderr


def test_without_triton_the_exit_is_the_normal_one():
    p = run(False)
    assert p.returncode == 3 and "leaked" in p.stderr  # the teardown ran, as for any Python program
