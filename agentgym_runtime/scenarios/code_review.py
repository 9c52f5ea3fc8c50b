"""Code review: pull requests, diffs, a linter and review verdicts over an in-memory repository host.

Example:
    >>> from agentgym_runtime.scenarios.code_review import CodeReviewScenario
    >>> review = CodeReviewScenario()
    >>> world = review.new_world(0)
    >>> pr = min(world.pulls)
    >>> review.toolbox(world).call("get_diff", {"pr_id": pr})["pr_id"] == pr
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agentgym_runtime.scenarios.base import ExpectedCall, Scenario, Split
from agentgym_runtime.tools import Tool, tool

Verdict = Literal["approve", "request_changes"]

#: Files are shared by both splits: the splits differ by pull request (number, author, files touched).
_FILES = (
    "api/server.py",
    "api/routes.py",
    "core/cache.py",
    "core/models.py",
    "utils/strings.py",
    "billing/invoice.py",
    "billing/tax.py",
    "auth/session.py",
    "auth/tokens.py",
    "jobs/queue.py",
)
_ID_RANGES: dict[Split, tuple[int, int]] = {"train": (100, 499), "heldout": (500, 999)}
_LINT_CODES = ("E501", "F401", "W605", "E711", "B006")


@dataclass
class PullRequest:
    """One pull request."""

    pr_id: int
    author: str
    files: tuple[str, ...]
    lint: dict[str, list[str]]
    state: str = "open"
    split: Split = "train"


@dataclass
class RepoWorld:
    """The in-memory repository host one episode works on."""

    pulls: dict[int, PullRequest] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)


#: Request phrasings, shared by both splits, which differ by pull request (a tiny demo model does not
#: generalise to unseen phrasings; a real model's held-out set may differ more).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "diff": (
        "Show me the diff of PR {ref}.",
        "What changed in pull request {ref}?",
        "Which files does PR {ref} touch?",
        "Give me the changes in PR {ref}.",
    ),
    "lint": (
        "Run the linter on {path} in PR {ref}.",
        "Lint file {path} of PR {ref}.",
        "Check {path} in PR {ref} with the linter.",
        "Any lint problems in {path} of PR {ref}?",
    ),
    "approve": (
        "PR {ref} looks good, approve it.",
        "Please approve pull request {ref}.",
        "Ship it: approve PR {ref}.",
        "Mark PR {ref} as approved.",
    ),
    "reject": (
        "Request changes on PR {ref}: {why}.",
        "Block PR {ref}, {why}.",
        "PR {ref} needs work, request changes: {why}.",
        "Send PR {ref} back, {why}.",
    ),
}
#: Phrasings that provoke the demo model's systematic mistakes (the same in both splits).
_PITFALL_TEMPLATES: dict[str, str] = {
    "lint": "Quick lint of PR {ref}: {path}.",
    "approve": "LGTM on PR {ref}, approve it.",
    "reject": "Request changes on PR {ref} urgently: {why}.",
}
_WHY = ("missing tests", "unclear naming", "too large", "breaks the api")


class CodeReviewScenario(Scenario):
    """A review bot on a repository host: reads diffs, runs the linter, approves or requests changes.

    Tools: ``get_diff``, ``run_linter``, ``submit_review``.

    Example:
        >>> sorted(t.name for t in CodeReviewScenario().tools())
        ['get_diff', 'run_linter', 'submit_review']
    """

    name: ClassVar[str] = "code_review"
    description: ClassVar[str] = "A code review bot: reads pull request diffs, runs the linter and submits reviews."
    difficulty: ClassVar[str] = "medium"
    estimated_time: ClassVar[str] = "about 5 minutes on a laptop CPU with the tiny demo model"
    hallucinated_tools: ClassVar[dict[str, str]] = {
        "get_diff": "get_pull_request",
        "run_linter": "lint",
        "submit_review": "approve_pr",
    }

    def new_world(self, seed: int) -> RepoWorld:
        """A host with 60 pull requests per split, drawn from ``seed``."""
        rng = random.Random(f"code_review-world:{seed}")
        world = RepoWorld()
        for split in ("train", "heldout"):
            low, high = _ID_RANGES[split]
            for pr_id in sorted(rng.sample(range(low, high + 1), 60)):
                files = tuple(sorted(rng.sample(_FILES, 2)))
                lint = {f: sorted(rng.sample(_LINT_CODES, rng.randint(0, 2))) for f in files}
                world.pulls[pr_id] = PullRequest(pr_id, rng.choice(("kim", "lou", "max")), files, lint, split=split)
        return world

    def build_tools(self, world: RepoWorld) -> list[Tool[..., Any]]:
        """The three review tools, bound to ``world``."""

        def _pull(pr_id: int) -> PullRequest:
            found = world.pulls.get(pr_id)
            if found is None:
                raise LookupError(f"no pull request {pr_id}")
            return found

        @tool
        def get_diff(pr_id: int) -> dict[str, Any]:
            """The files a pull request changes and its author.

            Args:
                pr_id: The pull request number.
            """
            pull = _pull(pr_id)
            return {"pr_id": pull.pr_id, "author": pull.author, "files": list(pull.files), "state": pull.state}

        @tool
        def run_linter(pr_id: int, path: str) -> dict[str, Any]:
            """Lint one file of a pull request.

            Args:
                pr_id: The pull request number.
                path: The file's path in the repository.
            """
            pull = _pull(pr_id)
            if path not in pull.lint:
                raise LookupError(f"PR {pr_id} does not change {path}")
            codes = pull.lint[path]
            return {"path": path, "problems": codes, "clean": "yes" if not codes else "no"}

        @tool
        def submit_review(pr_id: int, verdict: Verdict, comment: str = "") -> dict[str, Any]:
            """Approve a pull request or request changes.

            Args:
                pr_id: The pull request number.
                verdict: approve or request_changes.
                comment: Why (needed when requesting changes).
            """
            pull = _pull(pr_id)
            if pull.state != "open":
                raise ValueError(f"PR {pr_id} is already {pull.state}")
            if verdict == "request_changes" and not comment.strip():
                raise ValueError("requesting changes needs a comment")
            pull.state = "approved" if verdict == "approve" else "changes_requested"
            world.comments.append({"pr_id": pr_id, "verdict": verdict, "comment": comment})
            return {"pr_id": pr_id, "state": pull.state}

        return [get_diff, run_linter, submit_review]

    def make_task(self, world: RepoWorld, split: Split, rng: random.Random) -> Mapping[str, Any]:
        """One review request; some phrasings provoke a known model mistake."""
        pull = rng.choice([p for p in world.pulls.values() if p.split == split])
        intent = rng.choice(("diff", "lint", "approve", "reject"))
        pitfall: str | None = None
        path, why = "", ""
        if intent == "diff":
            calls = [ExpectedCall("get_diff", {"pr_id": pull.pr_id})]
            answer = pull.files[0]
        elif intent == "lint":
            path = rng.choice(pull.files)
            calls = [ExpectedCall("run_linter", {"pr_id": pull.pr_id, "path": path})]
            answer = pull.lint[path][0] if pull.lint[path] else "clean"
            if rng.random() < 0.3:
                pitfall = "missing_argument"  # the model forgets which file
        elif intent == "approve":
            calls = [ExpectedCall("submit_review", {"pr_id": pull.pr_id, "verdict": "approve"})]
            answer = "approved"
            if rng.random() < 0.4:
                pitfall = "hallucinated_tool"
        else:
            why = rng.choice(_WHY)
            calls = [ExpectedCall("submit_review", {"pr_id": pull.pr_id, "verdict": "request_changes", "comment": why})]
            answer = "changes_requested"
            if rng.random() < 0.3:
                pitfall = "malformed_json"
        ref = str(pull.pr_id)
        if pitfall is None and rng.random() < 0.25:
            ref, pitfall = f"#{ref}", "wrong_type"
        template = _PITFALL_TEMPLATES.get(intent) if pitfall not in (None, "wrong_type") else None
        prompt = (template or rng.choice(_TEMPLATES[intent])).format(ref=ref, path=path, why=why)
        return {
            "prompt": prompt,
            "expected_calls": tuple(calls),
            "expected_answer": answer,
            "intent": intent,
            "pitfall": pitfall,
        }
