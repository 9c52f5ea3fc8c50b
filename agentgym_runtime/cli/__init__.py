"""The ``agentgym`` command.

``agentgym --version`` answers before Typer, Rich or the runtime are imported
(it is what scripts and health checks call most); everything else builds the
Typer app from the command modules listed in :mod:`agentgym_runtime.cli.app`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``agentgym`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        from agentgym_runtime._version import __version__

        sys.stdout.write(f"agentgym-runtime {__version__}\n")
        return
    from agentgym_runtime.cli.app import build_app

    build_app()(args=args, prog_name="agentgym")
