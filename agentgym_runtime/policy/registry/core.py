"""The policy registry: versions, their status, and the live / canary / pinned pointers.

:class:`PolicyRegistry` is the facade the runtime, the router, the scheduler and the CLI use. It
composes the package's parts: the state model (:mod:`.state`), the transitions (:mod:`.transitions`,
pure functions), the file store with its lock and compare-and-set (:mod:`.files`) and the DuckDB
mirror (:mod:`.mirror`). Artifacts are verified before they are served: every file listed with its
sha256, no symlink, nothing outside the artifact's directory, files owned by the service's user and
not world-writable, and the manifest's own digest equal to the one recorded at registration (and to
the one mirrored in DuckDB), so a rewritten ``policy.json`` with a recomputed manifest is refused.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
    >>> v1 = registry.register("bot", system_prompt="Be exact.")
    >>> registry.promote("bot", v1.version).live
    1
    >>> [(info.version, info.status.value) for info in registry.policies("bot")]
    [(0, 'retired'), (1, 'live')]
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym_runtime.errors import ConfigurationError
from agentgym_runtime.policy import artifact as artifacts
from agentgym_runtime.policy.errors import (
    InferenceServerError,
    PolicyArtifactError,
    PolicyError,
    PolicyNotFoundError,
)
from agentgym_runtime.policy.redaction import redact_llm, redact_mapping
from agentgym_runtime.policy.registry import transitions
from agentgym_runtime.policy.registry.files import ChangeFn, PolicyFiles
from agentgym_runtime.policy.registry.mirror import StoreMirror, utc
from agentgym_runtime.policy.registry.state import PolicyEvent, PolicyInfo, PolicyState, PolicyStatus, parse_version
from agentgym_runtime.recording.policy import Demonstration, LLMConfig, Policy

if TYPE_CHECKING:
    from agentgym_runtime.collectors.store import TraceStore
    from agentgym_runtime.policy.inference_server import ServerAdapters

logger = logging.getLogger("agentgym_runtime.policy")

#: The actors whose events are automatic decisions (the gate; the router after endpoint failures; the
#: inference server refusing or failing to load or unload an adapter).
DECISION_ACTORS = frozenset({"gate", "router", "server"})
#: The actor of the inference server's logged refusals and failures.
SERVER_ACTOR = "server"


def default_actor() -> str:
    """``user@host:pid`` of this process (who registry changes are attributed to by default).

    Example:
        >>> ":" in default_actor()
        True
    """
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


class PolicyRegistry:
    """Versions, statuses and pointers of every agent's policies under one directory.

    Args:
        root: The policies directory (``<home>/policies``).
        store: The serving process's trace store, to mirror versions and events into
            (``None``: filesystem only, as in the CLI or another process).
        on_error: Where mirroring failures go (the runtime's ``internal_error``); they never fail
            a registry change.
        actor: Who the changes are attributed to by default.
        server: The user's inference server that serves versions with a LoRA adapter
            (:mod:`~agentgym_runtime.policy.inference_server`): their adapter is loaded before a
            version enters canary, is promoted or pinned, unloaded after a rollback, and the policy
            calls pin names it (:meth:`load_served`). ``None``: adapters are served in-process.

    Example:
        >>> import tempfile
        >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
        >>> registry.register("bot", tool_descriptions={"lookup": "Find an order."}).ref
        'bot@v1'
    """

    def __init__(
        self,
        root: Path | str,
        *,
        store: TraceStore | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        actor: str | None = None,
        server: ServerAdapters | None = None,
    ) -> None:
        self.root = Path(root)
        self.actor = actor or default_actor()
        self.server = server
        self.files = PolicyFiles(self.root)
        self.mirror = StoreMirror(self.files, store, rows=self._mirror_rows, on_error=on_error)
        self._cache: dict[tuple[str, int], Policy] = {}
        self._cache_lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    @property
    def store(self) -> TraceStore | None:
        """The trace store versions and events are mirrored into (``None`` once closed)."""
        return self.mirror.store

    # --- paths -----------------------------------------------------------------------------
    def agent_dir(self, agent: str) -> Path:
        """``<root>/<agent>``."""
        return self.files.agent_dir(agent)

    def pointers_path(self, agent: str) -> Path:
        """``<root>/<agent>/pointers.json``."""
        return self.files.pointers_path(agent)

    def events_path(self, agent: str) -> Path:
        """``<root>/<agent>/events.jsonl``."""
        return self.files.events_path(agent)

    def artifact_path(self, agent: str, version: int) -> Path:
        """``<root>/<agent>/v<version>`` (adapters resolve ``llm.adapter`` against it)."""
        return artifacts.version_dir(self.root, agent, version)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(agent)`` after every change this registry makes (the router's cache)."""
        self._listeners.append(listener)

    # --- reading ---------------------------------------------------------------------------
    def agents(self) -> list[str]:
        """Agents with registered policies, sorted."""
        return self.files.agents()

    def read_state(self, agent: str) -> PolicyState | None:
        """The agent's pointers, or ``None`` if it has none yet.

        Raises:
            PolicyError: ``pointers.json`` is not a valid pointers document, or is not trusted.
        """
        return self.files.read_state(agent)

    def state(self, agent: str) -> PolicyState:
        """The agent's pointers.

        Raises:
            PolicyNotFoundError: No policies registered for ``agent``; the message lists those that are.
        """
        state = self.read_state(agent)
        if state is None:
            raise self.files.unknown_agent(agent)
        return state

    def load(self, agent: str, version: int) -> Policy:
        """The policy of ``agent`` at ``version``, verified and cached (v0: the baseline).

        Raises:
            PolicyArtifactError: The artifact is corrupt, tampered with (also re-hashed: its
                manifest differs from the digest recorded at registration or mirrored in the
                store), points outside itself, or holds an untrusted file.
            PolicyNotFoundError: No such version.
        """
        key = (agent, version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if version == 0:
            policy = Policy.baseline(agent)
        else:
            path = self.artifact_path(agent, version)
            state = self.read_state(agent)
            if not os.path.lexists(path):
                if state is None:
                    raise self.files.unknown_agent(agent)
                raise transitions.unknown_version(state, version)
            policy = artifacts.read_artifact(path, agent=agent, version=version)
            self._check_digest(agent, version, path, state)
        with self._cache_lock:
            self._cache[key] = policy
        return policy

    def load_served(self, agent: str, version: int) -> Policy:
        """The policy calls of ``agent`` pin for ``version``: :meth:`load`, routed to the inference server.

        Without a server, or for a version without an adapter, that is :meth:`load`'s policy. With
        one, the version's adapter is loaded first if this process has not loaded it (another process
        may have promoted it), and the policy's ``llm.model`` names it there. That load happens on the
        router's refresh, so the first call after such a promotion waits for it (at most the server's
        timeout times its attempts); a promotion made through this registry has loaded it already.

        Raises:
            PolicyArtifactError: As :meth:`load`.
            PolicyNotFoundError: As :meth:`load`.
            InferenceServerError: The server refused or did not answer: the version cannot serve.
        """
        policy = self.load(agent, version)
        server = self.server
        if server is None or not server.serves(policy):
            return policy
        digest = self._digest(agent, version)
        server.deploy(policy, digest)
        return server.routed(policy, digest)

    def _digest(self, agent: str, version: int) -> str | None:
        state = self.read_state(agent)
        record = state.versions.get(version) if state is not None else None
        if record is not None and record.digest:
            return record.digest
        try:
            return artifacts.manifest_digest(self.artifact_path(agent, version))
        except PolicyArtifactError:
            return None

    def _check_digest(self, agent: str, version: int, path: Path, state: PolicyState | None) -> None:
        actual = artifacts.manifest_digest(path)
        record = state.versions.get(version) if state is not None else None
        recorded = record.digest if record is not None else None
        if recorded is not None and recorded != actual:
            raise PolicyArtifactError(
                f"policy artifact {path}: manifest.json changed since registration (sha256 {actual[:16]}…, "
                f"recorded {recorded[:16]}…): the artifact was rewritten and is refused"
            )
        mirrored = self.mirror.mirrored_digest(agent, version)
        if mirrored is not None and mirrored != actual:
            raise PolicyArtifactError(
                f"policy artifact {path}: manifest.json differs from the digest mirrored in the store "
                f"(sha256 {actual[:16]}…, mirrored {mirrored[:16]}…): the artifact was rewritten and is refused"
            )

    def resolve_ref(self, agent: str, ref: str | int) -> int:
        """A version number from ``3``, ``"v3"``, ``"live"``, ``"canary"`` or ``"pinned"``.

        Raises:
            PolicyNotFoundError: Unknown agent or version, or no canary / pin set.
        """
        state = self.state(agent)
        if isinstance(ref, str) and ref.strip().lower() in ("live", "canary", "pinned"):
            name = ref.strip().lower()
            value = state.live if name == "live" else state.canary if name == "canary" else state.pinned
            if value is None:
                raise PolicyNotFoundError(f"agent {agent!r} has no {name} version; live is v{state.live}")
            return value
        version = parse_version(ref)
        if version not in state.versions:
            raise transitions.unknown_version(state, version)
        return version

    def get(self, agent: str, ref: str | int = "live") -> Policy:
        """The policy ``ref`` points to (see :meth:`resolve_ref`)."""
        return self.load(agent, self.resolve_ref(agent, ref))

    def policies(self, agent: str) -> list[PolicyInfo]:
        """Every version of ``agent`` with its status, oldest first.

        Raises:
            PolicyNotFoundError: Unknown agent.
        """
        state = self.state(agent)
        infos = []
        for version, record in sorted(state.versions.items()):
            try:
                policy: Policy | None = self.load(agent, version)
                error = None
            except (PolicyArtifactError, PolicyNotFoundError) as exc:
                policy, error = None, str(exc)
            infos.append(PolicyInfo(agent, version, record.status, record.created_at, record.updated_at, policy, error))
        return infos

    def events(self, agent: str) -> list[PolicyEvent]:
        """Every logged transition and decision of ``agent``, oldest first."""
        return self.files.events(agent)

    def last_decision(self, agent: str) -> PolicyEvent | None:
        """The gate's (or the router's fallback) latest decision about ``agent``, with its numbers.

        Holds are logged too, so this says why a canary is still waiting: which minimum is not
        reached yet, or the z statistic against the look's boundary and the alpha spent.

        Example:
            >>> import tempfile
            >>> registry = PolicyRegistry(Path(tempfile.mkdtemp()))
            >>> _ = registry.start_canary("bot", registry.register("bot").version, 0.5)
            >>> registry.log_decision("bot", 1, "gate: hold (not enough tool calls yet)", {}, actor="gate")
            >>> registry.last_decision("bot").reason
            'gate: hold (not enough tool calls yet)'
        """
        for event in reversed(self.events(agent)):
            if event.actor in DECISION_ACTORS:
                return event
        return None

    # --- changing ---------------------------------------------------------------------------
    def _transact(
        self,
        agent: str,
        change: ChangeFn,
        *,
        expected_sequence: int | None = None,
        create: bool = False,
    ) -> PolicyState:
        new_state = self.files.transact(agent, change, expected_sequence=expected_sequence, create=create)
        for listener in list(self._listeners):
            listener(agent)
        self.mirror.schedule(agent)
        return new_state

    def register(
        self,
        agent: str,
        *,
        system_prompt: str | None = None,
        tool_descriptions: Mapping[str, str] | None = None,
        demonstrations: Sequence[Demonstration | Mapping[str, Any]] | None = None,
        llm: LLMConfig | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        trainer: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent_version: int | None = None,
        adapter_dir: Path | str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Policy:
        """Write a new version of ``agent``'s policy as a ``candidate``.

        Secrets are never stored: metadata and metrics values under secret-looking keys, and
        credentials in ``llm.endpoint`` (``user:password@`` or a ``?api_key=`` parameter), are
        replaced by ``[REDACTED]`` (give keys with ``llm.api_key_env``). An adapter whose
        ``adapter_config.json`` names another base model than the policy's ``llm.model`` (or
        ``metadata["base_model"]``) is refused here, not when it would serve.

        Raises:
            ConfigurationError: Invalid agent name or policy fields (the message says which).
            PolicyArtifactError: ``adapter_dir`` is unusable, or its adapter is for another base model.
        """
        from pydantic import ValidationError

        fields: dict[str, Any] = {
            "system_prompt": system_prompt,
            "tool_descriptions": dict(tool_descriptions or {}),
            "demonstrations": tuple(demonstrations or ()),
            "llm": redact_llm(llm),
            "metadata": redact_mapping(metadata or {}),
            "trainer": trainer or "manual",
            "metrics": redact_mapping(metrics or {}),
        }
        try:
            Policy.baseline(agent)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid agent name {agent!r}: {exc.errors()[0]['msg']}") from None
        if agent.startswith("."):
            raise ConfigurationError(f"invalid agent name {agent!r}: must not start with '.'")
        named = llm.adapter if isinstance(llm, LLMConfig) else (llm or {}).get("adapter")
        if named and adapter_dir is None:
            raise ConfigurationError(
                f"llm.adapter {named!r}: an artifact holds its adapter's files itself; pass adapter_dir= "
                f"(the directory of the trained safetensors files) instead of a path"
            )
        if "artifact_dir" in fields["metadata"]:
            raise ConfigurationError(
                "metadata['artifact_dir'] is reserved: a registered artifact's adapter is resolved in its own directory"
            )
        created: list[Policy] = []

        def change(state: PolicyState, now: float) -> tuple[PolicyState, list[PolicyEvent]]:
            on_disk = [int(p.name[1:]) for p in self.agent_dir(agent).glob("v*") if p.name[1:].isdigit()]
            version = max([*state.versions, *on_disk]) + 1
            parent = state.live if parent_version is None else parent_version
            if parent not in state.versions:
                raise transitions.unknown_version(state, parent)
            try:
                policy = Policy(agent=agent, version=version, parent_version=parent, **fields)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                raise ConfigurationError(f"invalid policy for {agent!r}: {problems}") from None
            if self.server is not None:
                self.server.check(policy, adapter_dir)  # an adapter it cannot serve: refused now, not later
            path = artifacts.write_artifact(policy, self.root, adapter_dir)
            policy = artifacts.read_artifact(path, agent=agent, version=version)
            with self._cache_lock:
                self._cache[(agent, version)] = policy
            created.append(policy)
            details = {"trainer": policy.trainer, "parent_version": parent, "metrics": policy.metrics}
            return transitions.register(
                state,
                version,
                now,
                actor=actor or self.actor,
                reason=reason,
                digest=artifacts.manifest_digest(path),
                details=details,
            )

        self._transact(agent, change, create=True)
        return created[0]

    def promote(
        self,
        agent: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Make ``version`` live (the previous live version is retired; a canary of it ends).

        The artifact is verified first: a corrupt one is refused and the current policy stays live.

        Raises:
            PolicyNotFoundError: Unknown agent or version.
            PolicyArtifactError: The artifact is corrupt or tampered with.
            PolicyConflictError: It is live already, or the pointers changed since ``expected_sequence``.
        """
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)
            self._deploy(agent, number, "promotion")
        who = actor or self.actor
        state = self._transact(
            agent,
            lambda state, now: transitions.promote(state, number, now, actor=who, reason=reason, details=details),
            expected_sequence=expected_sequence,
        )
        self._unload_unneeded(state)
        return state

    def start_canary(
        self,
        agent: str,
        version: int | str,
        share: float,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Route ``share`` of ``agent``'s episodes (sticky per session) to ``version``.

        A previous canary goes back to ``candidate``. A router with a trace store then runs the
        gate on it as canary episodes arrive (``RouterConfig.evaluate_every``).

        Raises:
            ConfigurationError: ``share`` outside (0, 1].
            PolicyNotFoundError: Unknown agent or version.
            PolicyArtifactError: The artifact is corrupt or tampered with.
            PolicyConflictError: ``version`` is live, or the pointers changed since ``expected_sequence``.
        """
        if not 0.0 < float(share) <= 1.0:
            raise ConfigurationError(f"canary share must be in (0, 1], got {share!r}")
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)
            self._deploy(agent, number, "canary")
        who = actor or self.actor
        return self._transact(
            agent,
            lambda state, now: transitions.start_canary(state, number, float(share), now, actor=who, reason=reason),
            expected_sequence=expected_sequence,
        )

    def rollback(
        self,
        agent: str,
        version: int | str | None = None,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        expected_sequence: int | None = None,
    ) -> PolicyState:
        """Roll back the canary if there is one, else the live version (to the previous live one).

        Args:
            agent: The agent.
            version: Only roll back if this version is the canary or live (else a conflict).
            actor: Who.
            reason: Why.
            details: Numbers that justify it.
            expected_sequence: Compare-and-set token.

        Raises:
            PolicyNotFoundError: Unknown agent.
            PolicyConflictError: Nothing to roll back, ``version`` is neither canary nor live, or the
                pointers changed since ``expected_sequence``.
        """
        wanted = None if version is None else parse_version(version)
        who = actor or self.actor
        before = self.read_state(agent)
        state = self._transact(
            agent,
            lambda state, now: transitions.rollback(state, wanted, now, actor=who, reason=reason, details=details),
            expected_sequence=expected_sequence,
        )
        if self.server is not None and before is not None:
            rolled_back = [
                v
                for v, record in state.versions.items()
                if record.status is PolicyStatus.ROLLED_BACK
                and (v not in before.versions or before.versions[v].status is not PolicyStatus.ROLLED_BACK)
            ]
            if state.live != before.live and state.live:
                self._deploy(agent, state.live, "rollback target", raise_error=False)
            for number in rolled_back:
                self._unload(agent, number, "rolled back")
        return state

    def reject(
        self,
        agent: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> PolicyState:
        """Mark a candidate ``rejected`` (e.g. it failed the offline gate).

        Raises:
            PolicyConflictError: The version is live or the canary.
        """
        number = self.resolve_ref(agent, version)
        who = actor or self.actor
        return self._transact(
            agent, lambda state, now: transitions.reject(state, number, now, actor=who, reason=reason, details=details)
        )

    def pin(
        self, agent: str, version: int | str, *, actor: str | None = None, reason: str | None = None
    ) -> PolicyState:
        """Serve ``version`` to every call of ``agent`` until :meth:`unpin` (overrides live and canary)."""
        number = self.resolve_ref(agent, version)
        if number:
            self._verify(agent, number)
            self._deploy(agent, number, "pin")
        who = actor or self.actor
        return self._transact(agent, lambda state, now: transitions.pin(state, number, now, actor=who, reason=reason))

    def unpin(self, agent: str, *, actor: str | None = None, reason: str | None = None) -> PolicyState:
        """Remove the pin; live and canary apply again.

        Raises:
            PolicyConflictError: Nothing is pinned.
        """
        who = actor or self.actor
        return self._transact(agent, lambda state, now: transitions.unpin(state, now, actor=who, reason=reason))

    def log_decision(
        self,
        agent: str,
        version: int,
        reason: str,
        details: Mapping[str, Any],
        *,
        actor: str | None = None,
    ) -> None:
        """Log a decision that changes no pointer (e.g. the gate holding a canary), with its numbers."""
        who = actor or self.actor
        self._transact(
            agent,
            lambda state, now: transitions.log_decision(state, version, now, actor=who, reason=reason, details=details),
        )

    # --- the inference server ---------------------------------------------------------------------
    def _deploy(self, agent: str, version: int, why: str, *, raise_error: bool = True) -> None:
        """Load ``version``'s adapter into the inference server before any pointer names it.

        A refusal or a server that does not answer is logged as the server's decision (with its
        message) and raised, so the pointers do not change and the live version keeps serving.
        """
        server = self.server
        if server is None:
            return
        policy = self.load(agent, version)
        if not server.serves(policy):
            return
        digest = self._digest(agent, version)
        try:
            server.deploy(policy, digest)
        except InferenceServerError as exc:
            state = self.read_state(agent)
            live = state.live if state is not None else 0
            stays = f"v{live} stays live" if why != "rollback target" else f"v{live} is live but not loaded"
            details = {
                "action": f"load ({why})",
                "server": server.server.url,
                "lora_name": server.lora_name(policy, digest),
                "lora_path": server.server_path(policy),
                "status": exc.status,
                "server_message": exc.server_message,
            }
            try:
                self.log_decision(agent, version, f"inference server: {exc}; {stays}", details, actor=SERVER_ACTOR)
            except PolicyError as log_error:  # the refusal itself is what the caller must see
                logger.error("agentgym: cannot log the inference server's refusal for %s: %s", policy.ref, log_error)
            if raise_error:
                raise
            logger.error("agentgym: %s", exc)

    def _unload(self, agent: str, version: int, why: str) -> None:
        """Unload ``version``'s adapter; a failure is logged as the server's decision, never raised."""
        server = self.server
        if server is None or version == 0:
            return
        try:
            policy = self.load(agent, version)
        except PolicyError:
            return
        if not server.serves(policy):
            return
        digest = self._digest(agent, version)
        try:
            server.retire(policy, digest)
        except InferenceServerError as exc:
            details = {
                "action": f"unload ({why})",
                "server": server.server.url,
                "lora_name": server.lora_name(policy, digest),
                "status": exc.status,
                "server_message": exc.server_message,
            }
            try:
                self.log_decision(agent, version, f"inference server: {exc}", details, actor=SERVER_ACTOR)
            except PolicyError as log_error:
                logger.error("agentgym: cannot log the inference server's failure for %s: %s", policy.ref, log_error)

    def _unload_unneeded(self, state: PolicyState) -> None:
        """After a promotion: unload what no pointer needs (the previous live version stays, for rollback)."""
        server = self.server
        if server is None:
            return
        keep = {state.live, state.canary, state.pinned}
        for previous in reversed(state.live_history):
            record = state.versions.get(previous)
            if record is not None and record.status not in (PolicyStatus.ROLLED_BACK, PolicyStatus.REJECTED):
                keep.add(previous)
                break
        for version in sorted(server.loaded_versions(state.agent)):
            if version not in keep:
                self._unload(state.agent, version, "no longer needed")

    def _verify(self, agent: str, version: int) -> None:
        with self._cache_lock:
            self._cache.pop((agent, version), None)  # re-check the files now, not a cached copy
        self.load(agent, version)

    # --- DuckDB mirror -------------------------------------------------------------------------
    def sync_store(self, agent: str | None = None) -> int:
        """Mirror versions and new events (also other processes') into the DuckDB tables now.

        Changes made through this registry are mirrored in the background within milliseconds;
        call this to be sure (tests, the gate) or to pick up other processes' changes.

        Returns:
            How many new events were written.
        """
        return self.mirror.sync(agent)

    def close(self) -> None:
        """Mirror what is pending, then stop using the store (called by the runtime's shutdown)."""
        self.mirror.close()

    def _mirror_rows(self, agent: str) -> list[list[Any]]:
        state = self.read_state(agent)
        if state is None:
            return []
        rows = []
        for version, record in sorted(state.versions.items()):
            try:
                policy: Policy | None = self.load(agent, version)
            except (PolicyArtifactError, PolicyNotFoundError, PolicyError):
                policy = None
            path = self.artifact_path(agent, version) if version else None
            # The digest recorded at registration, never one re-read from a file that may have
            # been rewritten since (older pointers without one: the file's, as before).
            digest = record.digest
            if digest is None and path is not None:
                try:
                    digest = artifacts.manifest_digest(path)
                except PolicyArtifactError:
                    digest = None
            rows.append(
                [
                    agent,
                    version,
                    record.status.value,
                    policy.parent_version if policy else None,
                    policy.trainer if policy else None,
                    str(path) if path else None,
                    digest,
                    utc(record.created_at),
                    utc(record.updated_at),
                    json.dumps(policy.metrics if policy else {}, default=str),
                    json.dumps(policy.metadata if policy else {}, default=str),
                ]
            )
        return rows
