"""QA testing: CI builds, test runs and bug reports over an in-memory CI system.

Example:
    >>> from agentgym_runtime.scenarios.qa_testing import QATestingScenario
    >>> qa = QATestingScenario()
    >>> world = qa.new_world(0)
    >>> build = min(world.builds)
    >>> qa.toolbox(world).call("list_failures", {"build": build})["build"] == build
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Split
from agentgym_runtime.tools import Tool, tool

Severity = Literal["minor", "major", "critical"]

_SUITES = ("checkout", "login", "search", "profile", "payments", "signup", "inventory", "reports")
#: Test and build numbers of each split's: the splits differ by test and by build.
_TEST_RANGES: dict[Split, tuple[int, int]] = {"train": (1000, 4999), "heldout": (5000, 9999)}
_BUILD_RANGES: dict[Split, tuple[int, int]] = {"train": (100, 499), "heldout": (500, 999)}
_PER_SPLIT = 60


@dataclass
class TestCase:
    """One test in the CI system (not a pytest test)."""

    __test__ = False  # keep pytest from collecting this dataclass

    test_id: str
    suite: str
    passes: bool
    split: Split


@dataclass
class CIWorld:
    """The in-memory CI system one episode works on."""

    tests: dict[str, TestCase] = field(default_factory=dict)
    builds: dict[int, list[str]] = field(default_factory=dict)  # build number -> failing test ids
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    bugs: list[dict[str, Any]] = field(default_factory=list)


#: Request phrasings, shared by both splits, which differ by test and build (a tiny demo model does
#: not generalise to unseen phrasings; a real model's held-out set may differ more).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "failures": (
        "Which tests failed in build {build}?",
        "What broke in build {build}?",
        "Show me the failing tests of build {build}.",
        "List the failures of build {build}.",
    ),
    "run": (
        "Run test {test}.",
        "Please execute the test {test}.",
        "Kick off test {test} now.",
        "Could you run {test} for me?",
    ),
    "bug": (
        "File a {severity} bug for test {test}.",
        "Report test {test} as a {severity} bug.",
        "Open a {severity} bug about {test}.",
        "Log a {severity} bug against test {test}.",
    ),
}
#: Phrasings that provoke the demo model's systematic mistakes (the same in both splits).
_PITFALL_TEMPLATES: dict[str, str] = {
    "hallucinated_tool": "Get me the failures of build {build}.",
    "wrong_type": "Run test {test} again.",
    "missing_argument": "File a bug for test {test}, {severity} I guess.",
    "malformed_json": "File a {severity} bug for {test} right now.",
}


class QATestingScenario(Scenario):
    """A QA agent on a CI system: reads a build's failures, runs tests and files bugs.

    Tools: ``list_failures``, ``run_test``, ``file_bug``.

    Example:
        >>> sorted(t.name for t in QATestingScenario().tools())
        ['file_bug', 'list_failures', 'run_test']
    """

    name: ClassVar[str] = "qa_testing"
    description: ClassVar[str] = "A QA agent on a CI system: reads build failures, runs tests and files bugs."
    difficulty: ClassVar[str] = "hard"
    estimated_time: ClassVar[str] = "about 5 minutes on a laptop CPU with the tiny demo model"
    hallucinated_tools: ClassVar[dict[str, str]] = {
        "list_failures": "get_failures",
        "run_test": "execute_test",
        "file_bug": "create_bug",
    }

    def new_world(self, seed: int) -> CIWorld:
        """60 tests and 60 builds per split, each build with one to three failing tests, drawn from ``seed``."""
        rng = random.Random(f"qa_testing-world:{seed}")
        world = CIWorld()
        for split in ("train", "heldout"):
            low, high = _TEST_RANGES[split]
            ids = [f"T-{n}" for n in sorted(rng.sample(range(low, high + 1), _PER_SPLIT))]
            for test_id in ids:
                world.tests[test_id] = TestCase(test_id, rng.choice(_SUITES), rng.random() < 0.7, split)
            low, high = _BUILD_RANGES[split]
            for build in sorted(rng.sample(range(low, high + 1), _PER_SPLIT)):
                world.builds[build] = sorted(rng.sample(ids, rng.randint(1, 3)))
        return world

    def build_tools(self, world: CIWorld) -> list[Tool[..., Any]]:
        """The three CI tools, bound to ``world``."""

        def _test(test_id: str) -> TestCase:
            found = world.tests.get(test_id)
            if found is None:
                raise LookupError(f"no test {test_id}")
            return found

        @tool
        def list_failures(build: int) -> dict[str, Any]:
            """The tests that failed in a CI build.

            Args:
                build: The build number.
            """
            failing = world.builds.get(build)
            if failing is None:
                raise LookupError(f"no build {build}")
            return {"build": build, "failed": list(failing)}

        @tool
        def run_test(test_id: str) -> dict[str, Any]:
            """Run one test and report whether it passed.

            Args:
                test_id: The test's id, e.g. T-1234.
            """
            test = _test(test_id)
            run_id = len(world.runs) + 1
            world.runs[run_id] = {"test_id": test_id, "passed": test.passes}
            return {"run_id": run_id, "test_id": test_id, "result": "passed" if test.passes else "failed"}

        @tool
        def file_bug(test_id: str, severity: Severity, title: str = "") -> dict[str, Any]:
            """File a bug about a test.

            Args:
                test_id: The test the bug is about.
                severity: minor, major or critical.
                title: A short title.
            """
            test = _test(test_id)
            bug_id = f"BUG-{len(world.bugs) + 1}"
            world.bugs.append({"id": bug_id, "test_id": test_id, "severity": severity, "title": title})
            return {"bug_id": bug_id, "suite": test.suite, "severity": severity}

        return [list_failures, run_test, file_bug]

    def make_task(self, world: CIWorld, split: Split, rng: random.Random) -> Mapping[str, Any]:
        """One QA request; some phrasings provoke a known model mistake."""
        tests = sorted((t for t in world.tests.values() if t.split == split), key=lambda t: t.test_id)
        test = rng.choice(tests)
        low, high = _BUILD_RANGES[split]
        build = rng.choice([b for b in world.builds if low <= b <= high])
        intent = rng.choice(("failures", "run", "bug"))
        pitfall: str | None = None
        severity = ""
        if intent == "failures":
            calls = [ExpectedCall("list_failures", {"build": build})]
            answer = world.builds[build][0]
            if rng.random() < 0.5:
                pitfall = "hallucinated_tool"
        elif intent == "run":
            calls = [ExpectedCall("run_test", {"test_id": test.test_id})]
            answer = "passed" if test.passes else "failed"
            if rng.random() < 0.5:
                pitfall = "wrong_type"
        else:
            severity = rng.choice(("minor", "major", "critical"))
            calls = [ExpectedCall("file_bug", {"test_id": test.test_id, "severity": severity})]
            answer = "BUG-1"
            if severity == "critical" and rng.random() < 0.6:
                pitfall = "malformed_json"
            elif rng.random() < 0.35:
                pitfall = "missing_argument"
        template = _PITFALL_TEMPLATES[pitfall] if pitfall is not None else rng.choice(_TEMPLATES[intent])
        prompt = template.format(build=build, test=test.test_id, severity=severity)
        return {
            "prompt": prompt,
            "expected_calls": tuple(calls),
            "expected_answer": answer,
            "intent": intent,
            "pitfall": pitfall,
        }
