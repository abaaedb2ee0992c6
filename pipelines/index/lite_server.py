"""Milvus Lite as a server: one child process owns the data folder, every other process talks gRPC to it.

Milvus Lite lets one process open a data folder (a second gets a lock error), so serving and a refresh
cannot both open ``data/milvus.db``. ``milvus-lite server`` fixes that: it holds the folder and answers
on a loopback port. While it runs, an *endpoint file* beside the folder names its address, and
:func:`resolve_uri` sends every client configured with the folder's path to the server instead, so
``musicrec index refresh`` works unchanged while ``musicrec serve`` is up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from pipelines.errors import UserError
from pipelines.parallel import pid_alive

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("http://", "https://", "tcp://", "grpc://", "unix:")


class MilvusServerError(UserError):
    """The Milvus Lite server could not be started (folder held by another process, port taken...)."""


def is_remote(uri: str) -> bool:
    """True for a server address, False for a Milvus Lite data folder path."""
    return uri.startswith(_REMOTE_PREFIXES)


def endpoint_file(data_dir: Path) -> Path:
    """Where a running server publishes its address: ``<data folder>.endpoint``, beside the folder."""
    return data_dir.with_name(data_dir.name + ".endpoint")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listening(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def folder_locked(data_dir: Path) -> bool:
    """True when another open Milvus Lite holds the folder's lock (checked without taking it for long)."""
    lock = Path(data_dir) / "LOCK"
    if not lock.exists():
        return False
    import fcntl

    with lock.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _read_endpoint(data_dir: Path) -> tuple[str, int, int | None] | None:
    """(address, server pid, owner pid or None) from the endpoint file, or None without a readable one."""
    try:
        fields = endpoint_file(data_dir).read_text().split()
        return fields[0], int(fields[1]), int(fields[2]) if len(fields) > 2 else None
    except (OSError, ValueError, IndexError):
        return None


def _is_lite_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"milvus_lite" in cmdline and b"server" in cmdline


def replace_orphan(data_dir: Path, timeout_s: float = 3.0) -> int | None:
    """Stop a ``milvus-lite server`` on ``data_dir`` whose owner (the ``musicrec serve`` that started it) died.

    Returns the stopped server's pid, or None when there was none. A stale endpoint file (its server is
    gone too) is removed. A server whose owner is alive is left alone.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    found = _read_endpoint(data_dir)
    if found is None:
        return None
    _, pid, owner = found
    if owner is not None and pid_alive(owner):
        return None
    stopped = None
    if pid_alive(pid) and _is_lite_server(pid):
        log.warning("milvus-lite server %d on %s outlived its owner %s; stopping it", pid, data_dir, owner)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = pid
    with contextlib.suppress(FileNotFoundError):
        endpoint_file(data_dir).unlink()
    return stopped


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def resolve_uri(uri: str) -> str:
    """The address to connect to for ``uri``: a running server's, if one owns that data folder.

    A stale endpoint file (its server died) is ignored, so a crash of the server never blocks opening
    the folder directly afterwards.
    """
    if is_remote(uri):
        return uri
    found = _read_endpoint(Path(uri).expanduser().resolve())
    if found is None:
        return uri
    address, pid, _ = found
    host, _, port = address.removeprefix("http://").rpartition(":")
    if pid_alive(pid) and _listening(host, int(port)):
        log.info("Milvus Lite folder %s is served at %s; connecting there", uri, address)
        return address
    return uri


class LiteServer:
    """``milvus-lite server`` on ``data_dir`` as a child process on a loopback port; a context manager.

    The child is owned: it runs in its own session (a Ctrl+C meant for the parent does not reach it
    first), it gets SIGTERM when the parent dies, even by SIGKILL, and the endpoint file names the
    owner's pid so a leftover server from a dead owner is recognised (:func:`replace_orphan`).
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".server.log")

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server, wait until it accepts connections, publish its address; returns the URI."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        cmd += ["--host", self.host, "--port", str(self.port)]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + timeout_s
        while not _listening(self.host, self.port):
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise MilvusServerError(
                    f"milvus-lite server on {self.data_dir} exited at start: {' '.join(tail) or 'no output'}"
                    " (is another process using this folder? stop it or point MUSICREC_MILVUS_URI at it)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise MilvusServerError(f"milvus-lite server did not answer on {self.uri} in {timeout_s:.0f}s")
            time.sleep(0.05)
        tmp = endpoint_file(self.data_dir).with_suffix(".tmp")
        tmp.write_text(f"{self.uri} {self.process.pid} {os.getpid()}\n")
        tmp.replace(endpoint_file(self.data_dir))
        log.info("milvus-lite server for %s listening on %s (pid %d)", self.data_dir, self.uri, self.process.pid)
        return self.uri

    def keep_alive(self, interval_s: float = 0.5) -> None:
        """Restart the server on the same port whenever it dies, until :meth:`stop` (a daemon thread)."""

        def watch() -> None:
            while not self._stopping.wait(interval_s):
                if self.process is not None and self.process.poll() is not None and not self._stopping.is_set():
                    log.warning(
                        "milvus-lite server %d exited (%s); restarting it", self.process.pid, self.process.returncode
                    )
                    try:
                        self.start()
                        self.restarts += 1
                    except MilvusServerError as exc:
                        log.error("could not restart milvus-lite server: %s", exc)

        self._watcher = threading.Thread(target=watch, name="milvus-lite-watch", daemon=True)
        self._watcher.start()

    def stop(self, timeout_s: float = 2.5) -> None:
        """Stop gracefully (SIGINT lets Milvus Lite flush and release its lock), then kill if it hangs."""
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5)
        with contextlib.suppress(FileNotFoundError):
            path = endpoint_file(self.data_dir)
            if self.process is not None and path.read_text().split()[1] == str(self.process.pid):
                path.unlink()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LiteServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
