"""Which files of the policies directory may be read: the service's own, and nobody else's to write.

Pointers, events and artifacts choose the prompts, endpoints and adapter weights the service
serves, so a file another user planted or could have changed is refused before it is read:

* no symbolic links (a link can point anywhere; a copy in place is what an artifact holds);
* owned by the service's effective user (``os.geteuid()``);
* not writable by everyone (``o+w``) — group-writable is allowed, for shared service groups.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> f = Path(tempfile.mkdtemp()) / "pointers.json"
    >>> _ = f.write_text("{}")
    >>> f.chmod(0o600)
    >>> check_trusted(f, "pointers").st_size
    2
"""

from __future__ import annotations

import os
from pathlib import Path

from agentgym_runtime.policy.errors import UntrustedFileError
from agentgym_runtime.recording.files import untrusted_reason


def check_trusted(path: Path, what: str) -> os.stat_result:
    """``lstat(path)`` if the file (or directory) may be trusted, else :class:`UntrustedFileError`.

    Args:
        path: The file or directory.
        what: What it is, for the message (``"pointers"``, ``"policy artifact file"``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UntrustedFileError: A symlink, another user's, or world-writable; the message says which
            and how to fix it.
    """
    info, reason = untrusted_reason(path, group_may_write=True)
    if reason is None:
        return info
    fixes = {"owned": " (chown it if it is yours)", "it is world-writable": f"; run `chmod o-w {path}` if it is yours"}
    hint = next((fix for start, fix in fixes.items() if reason.startswith(start)), "")
    raise UntrustedFileError(f"refusing {what} {path}: {reason}{hint}")
