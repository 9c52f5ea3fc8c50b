"""A real SSH server on loopback for the backend tests: asyncssh, key auth, a known host key.

It runs shell commands with ``/bin/sh`` as this user and serves SFTP on the local filesystem,
so the "remote host" is this machine seen through a real SSH connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh


async def _run_command(process: asyncssh.SSHServerProcess[bytes]) -> None:
    command = process.command or "true"
    proc = await asyncio.create_subprocess_shell(
        command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    process.stdout.write(stdout)
    process.stderr.write(stderr)
    process.exit(proc.returncode or 0)


@dataclass
class LoopbackSSH:
    """What a test needs to reach the server."""

    port: int
    client_key: Path
    known_hosts: Path
    other_key: Path
    loop: asyncio.AbstractEventLoop
    server: Any
    connections: list[Any] = field(default_factory=list)

    def drop(self) -> None:
        """Stop accepting and cut every open connection (a host that goes away midway)."""

        async def cut() -> None:
            self.server.close()
            for conn in list(self.connections):
                conn.abort()

        asyncio.run_coroutine_threadsafe(cut(), self.loop).result(10)


@contextmanager
def loopback_ssh(directory: Path) -> Iterator[LoopbackSSH]:
    """Start the server on 127.0.0.1 (a free port) in a thread; stop it afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    client_path, other_path = directory / "id_client", directory / "id_other"
    client_key.write_private_key(str(client_path))
    other_key.write_private_key(str(other_path))
    client_path.chmod(0o600)
    other_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="loopback-sshd", daemon=True)
    thread.start()
    connections: list[Any] = []

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            connections.append(conn)

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    async def start() -> Any:
        return await asyncssh.create_server(
            Server,
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            process_factory=_run_command,
            sftp_factory=True,
            allow_scp=False,
            encoding=None,
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    port = server.sockets[0].getsockname()[1]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    handle = LoopbackSSH(port, client_path, known_hosts, other_path, loop, server, connections)
    try:
        yield handle
    finally:

        async def stop() -> None:
            server.close()
            for conn in list(connections):
                conn.abort()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
