"""The ``agentgym`` command.

``agentgym --version`` answers before Typer, Rich or the runtime are imported
(it is what scripts and health checks call most), and so does ``agentgym status``
(:mod:`agentgym_runtime.cli.status`); everything else builds the Typer app from the
command modules listed in :mod:`agentgym_runtime.cli.app`.
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
    if args[:1] == ["status"]:
        from agentgym_runtime.cli.status import fast_main

        if fast_main(args[1:]):
            return
    from agentgym_runtime.cli.app import build_app

    build_app()(args=args, prog_name="agentgym")
