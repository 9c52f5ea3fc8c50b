"""QA testing: test suites, runs, failure logs and bug reports over an in-memory CI system.

Example:
    >>> from agentgym_runtime.scenarios.qa_testing import QATestingScenario
    >>> qa = QATestingScenario()
    >>> world = qa.new_world(0)
    >>> qa.toolbox(world).call("list_tests", {"suite": "checkout"})["suite"]
    'checkout'
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Split
from agentgym_runtime.tools import Tool, tool

Severity = Literal["minor", "major", "critical"]

_SUITES: dict[Split, tuple[str, ...]] = {
    "train": ("checkout", "login", "search", "profile"),
    "heldout": ("payments", "signup", "inventory", "reports"),
}
_CASES = ("smoke", "edge", "load", "regression", "i18n")


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
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    bugs: list[dict[str, Any]] = field(default_factory=list)


_TEMPLATES: dict[Split, dict[str, tuple[str, ...]]] = {
    "train": {
        "list": ("List the tests in the {suite} suite.", "Which tests does suite {suite} have?"),
        "run": ("Run test {test}.", "Please execute the test {test}."),
        "bug": ("File a {severity} bug for test {test}.", "Report test {test} as a {severity} bug."),
    },
    "heldout": {
        "list": ("Show all tests of suite {suite}.", "What tests live in {suite}?"),
        "run": ("Kick off test {test} now.", "Could you run {test} for me?"),
        "bug": ("Open a {severity} bug about {test}.", "Log a {severity} bug against test {test}."),
    },
}
#: Phrasings that provoke the demo model's systematic mistakes (the same in both splits).
_PITFALL_TEMPLATES: dict[str, str] = {
    "hallucinated_tool": "Get me the tests of {suite}.",
    "wrong_type": "Run test {test} again.",
    "missing_argument": "File a bug for test {test}, {severity} I guess.",
    "malformed_json": "File a {severity} bug for {test} right now.",
}


class QATestingScenario(Scenario):
    """A QA agent on a CI system: lists suites, runs tests and files bugs.

    Tools: ``list_tests``, ``run_test``, ``file_bug``.

    Example:
        >>> sorted(t.name for t in QATestingScenario().tools())
        ['file_bug', 'list_tests', 'run_test']
    """

    name: ClassVar[str] = "qa_testing"
    description: ClassVar[str] = "A QA agent on a CI system: lists test suites, runs tests and files bugs."
    difficulty: ClassVar[str] = "hard"
    estimated_time: ClassVar[str] = "about 10 minutes on a laptop CPU with the tiny demo model"
    hallucinated_tools: ClassVar[dict[str, str]] = {
        "list_tests": "get_tests",
        "run_test": "execute_test",
        "file_bug": "create_bug",
    }

    def new_world(self, seed: int) -> CIWorld:
        """Every suite with its five tests; which tests pass is drawn from ``seed``."""
        rng = random.Random(f"qa_testing-world:{seed}")
        world = CIWorld()
        for split in ("train", "heldout"):
            for suite in _SUITES[split]:
                for case in _CASES:
                    test_id = f"{suite}.{case}"
                    world.tests[test_id] = TestCase(test_id, suite, rng.random() < 0.7, split)
        return world

    def build_tools(self, world: CIWorld) -> list[Tool[..., Any]]:
        """The three CI tools, bound to ``world``."""

        def _test(test_id: str) -> TestCase:
            found = world.tests.get(test_id)
            if found is None:
                raise LookupError(f"no test {test_id}")
            return found

        @tool
        def list_tests(suite: str) -> dict[str, Any]:
            """The tests of a suite.

            Args:
                suite: The suite's name.
            """
            names = sorted(t.test_id for t in world.tests.values() if t.suite == suite)
            if not names:
                raise LookupError(f"no suite {suite}")
            return {"suite": suite, "tests": names}

        @tool
        def run_test(test_id: str) -> dict[str, Any]:
            """Run one test and report whether it passed.

            Args:
                test_id: ``suite.case``, e.g. checkout.smoke.
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
            _test(test_id)
            bug_id = f"BUG-{len(world.bugs) + 1}"
            world.bugs.append({"id": bug_id, "test_id": test_id, "severity": severity, "title": title})
            return {"bug_id": bug_id, "severity": severity}

        return [list_tests, run_test, file_bug]

    def make_task(self, world: CIWorld, split: Split, rng: random.Random) -> Mapping[str, Any]:
        """One QA request; some phrasings provoke a known model mistake."""
        tests = sorted((t for t in world.tests.values() if t.split == split), key=lambda t: t.test_id)
        test = rng.choice(tests)
        intent = rng.choice(("list", "run", "bug"))
        pitfall: str | None = None
        severity = ""
        if intent == "list":
            calls = [ExpectedCall("list_tests", {"suite": test.suite})]
            answer = f"{test.suite}.smoke"
            if rng.random() < 0.35:
                pitfall = "hallucinated_tool"
        elif intent == "run":
            calls = [ExpectedCall("run_test", {"test_id": test.test_id})]
            answer = "passed" if test.passes else "failed"
            if rng.random() < 0.3:
                pitfall = "wrong_type"
        else:
            severity = rng.choice(("minor", "major", "critical"))
            calls = [ExpectedCall("file_bug", {"test_id": test.test_id, "severity": severity})]
            answer = "BUG-1"
            if severity == "critical":
                pitfall = "malformed_json"
            elif rng.random() < 0.3:
                pitfall = "missing_argument"
        template = _PITFALL_TEMPLATES[pitfall] if pitfall is not None else rng.choice(_TEMPLATES[split][intent])
        prompt = template.format(suite=test.suite, test=test.test_id, severity=severity)
        return {
            "prompt": prompt,
            "expected_calls": tuple(calls),
            "expected_answer": answer,
            "intent": intent,
            "pitfall": pitfall,
        }
