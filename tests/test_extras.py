"""The built wheel, installed the way users install it, runs each framework's quickstart (issue #19).

For each extra — ``[langchain]``, ``[autogen]``, ``[crewai]``, ``[train]`` — ``scripts/check_extras.sh``
makes a fresh virtualenv, installs the wheel with that one extra from the package index (the newest
releases it serves, not ``requirements/lock.txt``; for ``[train]`` the CPU build of torch where one
lies on disk), checks that a serving extra pulls neither Agent Lightning nor its pins, and runs that
framework's quickstart (``examples/*.py``) from an empty directory, so the installed wheel is what runs.

These tests need the package index (network). With a warm uv cache all four take ~2 min on two
cores ([train] ~85 s of it); a cold cache adds the downloads. Offline, deselect them with
``-m "not extras"``; ``make check-extras`` runs the same script directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_extras.sh"
EXTRAS = ("langchain", "autogen", "crewai", "train")


def _uv() -> str:
    """The uv that ``make install`` puts next to the interpreter running the tests (else ``.venv``'s, else PATH's)."""
    for candidate in (Path(sys.executable).parent / "uv", ROOT / ".venv" / "bin" / "uv"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv not found (make install puts it in .venv/bin): cannot build or install the wheel")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built once from this tree, as users get it from the index."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [_uv(), "build", "--quiet", "--wheel", "--out-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"building the wheel failed:\n{result.stderr[-3000:]}"
    (built,) = out.glob("agentgym_runtime-*.whl")
    return built


@pytest.mark.extras
@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
def test_extra_installs_from_the_index_and_its_quickstart_runs(extra: str, wheel: Path) -> None:
    env = {**os.environ, "UV": _uv(), "WHEEL": str(wheel), "COLUMNS": "200"}
    result = subprocess.run(
        ["bash", str(SCRIPT), extra], capture_output=True, text=True, timeout=570, env=env, cwd=ROOT
    )
    output = result.stdout + result.stderr
    verdict = next((line for line in output.splitlines() if line.startswith(f"[{extra}] ")), None)
    print(verdict)  # "[extra] ok in N s: <versions>", shown with -s / -rP
    assert result.returncode == 0, (
        f"agentgym-runtime[{extra}] from the index: {verdict or 'no verdict line'}\n{output[-6000:]}"
    )
    assert verdict is not None and verdict.startswith(f"[{extra}] ok in "), output[-3000:]


@pytest.mark.parametrize("extra", ["no-such-extra"])
def test_a_failure_names_the_extra_and_the_step(extra: str, tmp_path: Path) -> None:
    fake = tmp_path / "agentgym_runtime-0-py3-none-any.whl"
    fake.write_bytes(b"")
    env = {**os.environ, "UV": _uv(), "WHEEL": str(fake)}
    result = subprocess.run(["bash", str(SCRIPT), extra], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert f"[{extra}] FAILED at arguments: unknown extra '{extra}'" in result.stdout
    assert result.stdout.rstrip().endswith(f"check-extras FAILED for: {extra} (of: {extra})")
