"""The recording core: episodes, context variables, the capture API, validation and serialization.

Every adapter records through :mod:`agentgym_runtime.recording.capture`; this package imports nothing
from ``policy``, ``trainers``, ``adapters``, ``cli`` or ``services`` (the immutable policy model
it pins on every episode lives here, in :mod:`agentgym_runtime.recording.policy`).
"""
