"""binder/ builds as mybinder.org would: repo2docker's steps, replayed in a fresh environment.

repo2docker installs the Debian packages of ``apt.txt``, runs ``pip install -r
binder/requirements.txt`` in the repository's root, runs ``binder/postBuild``, and starts every
command through ``binder/start``. This test replays those steps on a copy of the repository's
files (so the widget bundle, which git ignores, is built from scratch as on Binder) with a new
virtual environment, then runs the quickstart's first cells through ``binder/start``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BINDER = ROOT / "binder"


def packages(apt_txt: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in apt_txt.read_text().splitlines())
    return [line for line in lines if line]


def test_apt_txt_names_real_debian_packages() -> None:
    names = packages(BINDER / "apt.txt")
    assert names, "apt.txt lists no packages"
    for name in names:
        shown = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True)
        assert shown.returncode == 0 and f"Package: {name}\n" in shown.stdout, (name, shown.stderr)


def preferred_openblas() -> str:
    """What ``make`` and ``binder/start`` preload: OpenBLAS's OpenMP build, else its pthread one."""
    for build in ("openblas-openmp", "openblas-pthread"):
        found = sorted(Path("/usr/lib").glob(f"*-linux-gnu/{build}/libopenblas.so.0"))
        if found:
            return str(found[0])
    return ""


def without_blas_settings() -> dict[str, str]:
    """This environment without a preload or a BLAS thread count (as a notebook starts)."""
    dropped = ("LD_PRELOAD", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def test_make_and_binder_preload_the_same_openblas() -> None:
    shown = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "show: ; @echo $(OPENBLAS)", "show"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    started = subprocess.run(
        [str(BINDER / "start"), sys.executable, "-c", "import os; print(os.environ['LD_PRELOAD'])"],
        env=without_blas_settings(),
        capture_output=True,
        text=True,
    )
    assert shown.stdout.strip() == preferred_openblas()
    assert started.stdout.strip() == preferred_openblas() or not preferred_openblas()


FORK_AFTER_GENERATION = """
import os, sys, mlx_lm
model, tokenizer = mlx_lm.load(sys.argv[1])
messages = [{"role": "user", "content": "hi"}]
prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
for _ in range(5):
    for _ in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=8):
        pass
    pid, terminal = os.forkpty()  # how IPython runs `!cmd` (through pexpect)
    if pid == 0:
        os.execv("/bin/true", ["/bin/true"])
    os.waitpid(pid, 0)
    os.close(terminal)
print("forked", os.environ.get("LD_PRELOAD", ""))
"""


def test_a_shell_escape_after_generation_does_not_hang(tiny_model_dir: Path) -> None:
    """With the preload ``binder/start`` (and ``make``) choose and OpenBLAS's own thread count.

    OpenBLAS 0.3.21's pthread build deadlocked in its fork handler here in 5 of 5 runs (a
    notebook's ``!cmd`` hung in 3 of 4); its OpenMP build has no such handler.
    """
    done = subprocess.run(
        [str(BINDER / "start"), sys.executable, "-c", FORK_AFTER_GENERATION, str(tiny_model_dir)],
        env=without_blas_settings(),
        capture_output=True,
        text=True,
        timeout=60,  # ~3 s here; a deadlocked fork handler never returns
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["forked", *filter(None, [preferred_openblas()])]


def copy_of_repository(target: Path) -> Path:
    """The repository's files (tracked or new, never git-ignored ones) copied to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file may be deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    seconds = time.monotonic() - started
    print(f"{seconds:6.1f} s  {' '.join(command)[:100]}")
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


QUICKSTART = """
import os, mlxnb, mlxnb.testing
from pathlib import Path
print("LD_PRELOAD", os.environ.get("LD_PRELOAD", ""))
print("package", Path(mlxnb.__file__).parent)
print("widget", (Path(mlxnb.__file__).parent / "static" / "widget.js").stat().st_size > 0)
engine = mlxnb.load(mlxnb.default_model())
turn = engine.generate(
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    max_tokens=24, temperature=0,
)
print("answer", turn.content)
"""


@pytest.mark.slow
def test_binder_builds_and_starts(tmp_path: Path) -> None:
    repo = copy_of_repository(tmp_path / "repo")
    assert not (repo / "mlxnb" / "static" / "widget.js").exists()
    venv = tmp_path / "env"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "LD_PRELOAD")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONNOUSERSITE"] = "1"

    run([sys.executable, "-m", "venv", str(venv)], repo, env, 120)
    # --no-compile: byte-compiling every installed module is slow and changes nothing tested.
    run(
        ["pip", "install", "--quiet", "--no-compile", "-r", "binder/requirements.txt"],
        repo,
        env,
        900,
    )
    run([str(repo / "binder" / "postBuild")], repo, env, 300)
    out = run([str(repo / "binder" / "start"), "python", "-c", QUICKSTART], repo, env, 300)

    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert Path(lines["package"]) == repo / "mlxnb", "an editable install of the repository"
    assert lines["widget"] == "True", "the widget bundle was built during the install"
    assert lines["LD_PRELOAD"] == preferred_openblas()
    assert "Paris" in lines["answer"]
