"""The recording core: episodes, context variables, the capture API, validation and serialization.

Every adapter records through :mod:`agentgym_runtime.recording.capture`; this package imports nothing
from ``policy`` (beyond the immutable policy model), ``trainers``, ``adapters`` or ``cli``.
"""
