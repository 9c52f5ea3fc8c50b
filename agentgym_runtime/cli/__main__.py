"""``python -m agentgym_runtime.cli`` is the ``agentgym`` command."""

from agentgym_runtime.cli import main

main()
