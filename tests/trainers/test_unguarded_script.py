"""A script that serves at import time (no ``if __name__ == "__main__":``) fails its job at once.

A training job that replays the agent imports the user's script again. Found by a new-user trial:
a script whose serving loop sat at module level ran that loop inside the job — configured agentgym
with the job's command line (a directory named ``--spec`` appeared), started a second scheduler
whose jobs failed, and the real job hung until its one-hour timeout. Now the job refuses what only
serving does during that import, and the run fails in seconds with a reason that names the script
and the guard.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentgym_runtime as agentgym
from agentgym_runtime.recording.import_guard import (
    AgentCodeImportError,
    importing_agent_code,
    importing_now,
    refuse_while_importing,
    training_job,
)
from agentgym_runtime.trainers.lightning.common import import_object

ROOT = Path(__file__).resolve().parents[2]

_TOOLS = '''
import itertools, sys
import agentgym_runtime as agentgym

@agentgym.tool
def lookup(order_id: int) -> str:
    """Order status."""
    return "shipped"

TOOLS = agentgym.Toolbox([lookup])

@agentgym.train_online(name="bot", trainer="demos", trainer_options={"embedder": "lexical"})
def bot(q):
    args = '{"order_id": 7}' if q.startswith("easy") else '{"order_id": "seven"}'
    try:
        return str(TOOLS.call("lookup", args))
    except agentgym.ToolArgumentsError as e:
        return f"sorry {e}"
'''

#: The trial's shape: configure from the command line, then serve, all at module level.
CONFIGURES_AT_IMPORT = (
    _TOOLS
    + """
agentgym.configure(home=sys.argv[1])
for i in range(int(sys.argv[2])):
    bot(("easy " if i % 2 else "hard ") + str(i))
"""
)

#: Configured by AGENTGYM_HOME; the loop keeps serving through any Exception, as services do.
SERVES_AT_IMPORT = (
    _TOOLS
    + """
served = 0
for i in itertools.count():
    try:
        bot(("easy " if i % 2 else "hard ") + str(i))
        served += 1
    except Exception:
        pass
    if served == int(sys.argv[2]):
        break
"""
)


@pytest.fixture
def no_mark() -> Iterator[None]:
    yield
    assert importing_now() is None  # nothing leaks out of a test


def test_refused_only_while_a_job_imports_the_code(no_mark: None) -> None:
    refuse_while_importing("called agentgym.configure()")  # a service's own run: nothing to refuse
    with training_job(), importing_agent_code("/srv/app.py"):
        with pytest.raises(AgentCodeImportError) as caught:
            refuse_while_importing("ran agent 'bot'")
        with importing_agent_code("helpers"):
            assert importing_now() == "helpers"
        assert importing_now() == "/srv/app.py"
    assert str(caught.value) == (
        "the training job imports /srv/app.py again to replay the agent, and importing it ran agent 'bot': "
        'code that configures agentgym or serves the agent must run under `if __name__ == "__main__":` '
        "(or in a function your service calls), not when the module is imported"
    )
    assert not isinstance(caught.value, Exception)  # a serving loop's `except Exception` cannot swallow it


def test_a_thread_the_import_starts_is_refused_too(no_mark: None) -> None:
    outcomes: list[str] = []

    def serve() -> None:
        try:
            refuse_while_importing("ran agent 'bot'")
            outcomes.append("served")
        except AgentCodeImportError as exc:
            outcomes.append(str(exc).split(",")[0])

    with training_job(), importing_agent_code("app"):
        worker = threading.Thread(target=serve)
        worker.start()
        worker.join()
    assert outcomes == ["the training job imports app again to replay the agent"]


def test_outside_a_training_job_an_import_refuses_nothing(
    tmp_path: Path, no_mark: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trainer run in the service's own process (trainer.train(spec) in a notebook) imports the
    # agent's code while other threads serve: those threads must never be refused.
    served: list[str] = []
    started, release = threading.Event(), threading.Event()
    module = tmp_path / "slow_module.py"
    # The module under import reaches the test's events through a module of their own, put in
    # sys.modules for this test only.
    events = types.ModuleType("agentgym_test_import_events")
    events.READY, events.GO = started, release  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, events.__name__, events)
    module.write_text(f"from {events.__name__} import GO, READY\nREADY.set()\nGO.wait(10)\nVALUE = 1\n")

    def serve() -> None:
        started.wait(10)
        refuse_while_importing("ran agent 'bot'")
        served.append("served")
        release.set()

    worker = threading.Thread(target=serve)
    worker.start()
    assert import_object(f"{module}:VALUE") == 1  # the import waits until the thread has served
    worker.join(10)
    assert served == ["served"]


def test_import_object_refuses_a_script_that_configures_on_import(
    tmp_path: Path, no_mark: None, no_registered_training: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "app.py"
    script.write_text(CONFIGURES_AT_IMPORT)
    monkeypatch.setattr(sys, "argv", ["job", "--spec", "2"])  # what the script reads in a job
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AgentCodeImportError) as caught, training_job():
        import_object(f"{script}:bot")
    assert str(caught.value).startswith(
        f"the training job imports {script} again to replay the agent, and importing it called agentgym.configure()"
    )
    assert f"agentgym_script_{abs(hash(str(script.resolve())))}_app" not in sys.modules  # not left half-imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py"]  # configure never ran with "--spec"
    agentgym.configure(home=tmp_path / "home")  # the mark is gone once the import failed
    agentgym.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "action"),
    [(CONFIGURES_AT_IMPORT, "called agentgym.configure()"), (SERVES_AT_IMPORT, "ran agent 'bot'")],
    ids=["configures", "serves"],
)
def test_the_job_fails_at_once_naming_the_guard(
    tmp_path: Path, source: str, action: str, no_registered_training: None
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    script = work / "app.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTGYM_HOME": str(home)}
    recorded = subprocess.run(
        [sys.executable, str(script), str(home), "8"], cwd=work, capture_output=True, text=True, timeout=120, env=env
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr

    from agentgym_runtime.trainers.scheduler import training_config

    runtime = agentgym.configure(home=home)
    try:
        assert runtime.store.query("SELECT count(*) FROM episodes WHERE agent = 'bot'") == [(8,)]
        config = training_config(
            "bot",
            trainer="demos",
            min_new_episodes=4,
            gpu="cpu",
            timeout_s=300,
            entrypoint=f"{script}:bot",
            trainer_options={"embedder": "lexical"},
        )
        run = runtime.scheduler.run_now("bot", config=config)
        assert run.status == "failed", (run.reason, run.error, run.log_tail)
        assert run.reason == "invalid job"  # failed by itself, not killed at its timeout
        assert run.error == (
            f"AgentCodeImportError: the training job imports {script} again to replay the agent, and importing it {action}: code that "
            'configures agentgym or serves the agent must run under `if __name__ == "__main__":` (or in a '
            "function your service calls), not when the module is imported"
        )
        # The job served nothing: no episode, no store or directory from its command line.
        assert runtime.store.query("SELECT count(*) FROM episodes WHERE agent = 'bot'") == [(8,)]
        assert runtime.store.query("SELECT count(*) FROM training_runs WHERE agent = 'bot'") == [(1,)]
        assert sorted(p.name for p in work.iterdir()) == ["app.py"]
        assert not (Path.cwd() / "--spec").exists()
    finally:
        agentgym.shutdown()
