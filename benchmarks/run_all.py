"""Run every ``benchmarks/bench_*.py`` in its own process and print their markdown sections.

``make bench`` runs this; paste the output into ``benchmarks/RESULTS.md`` together with the
machine line each section prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    only = set(sys.argv[1:])
    failed = []
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_TESTING": "true",
        "HF_HUB_OFFLINE": "1",
    }
    for script in sorted(HERE.glob("bench_*.py")):
        if only and script.stem not in only:
            continue
        print(f"<!-- {script.name} -->", flush=True)
        result = subprocess.run([sys.executable, str(script)], env=env, check=False)
        if result.returncode:
            failed.append(script.name)
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
