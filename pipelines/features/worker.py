"""Embedding files in a child process that the parent kills when a decode takes too long.

Why a process: a decoder stuck inside C code cannot be interrupted from Python, and one that crashes takes
its process with it; either way the build must quarantine the file and go on. Why one long-lived child per
shard rather than one per file: starting Python and importing the front end costs about half a second, twenty
tracks' worth of work. When a file times out or kills the child, a fresh child is started for the next file.

Protocol over the child's stdin/stdout: the parent writes one JSON line per file; the child answers one
JSON line, followed by ``nbytes`` bytes of float32 vector when the file was embedded.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.audio import RejectReason
from pipelines.features.params import FeatureParams

log = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 180.0  # imports plus a warm-up MFCC, on a busy machine
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# One core per child: BLAS or OpenMP threads would fight the other shards for the same cores.
_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


@dataclass(frozen=True)
class Outcome:
    """What happened to one file: a vector, or a quarantine verdict."""

    vector: np.ndarray | None
    frames_real: int = 0
    reason: str = ""
    error_type: str = ""
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.vector is not None


class WorkerDied(RuntimeError):
    """The child could not be started at all: a broken environment, not a bad file."""


class EmbedWorker:
    """Parent-side handle of one child; ``embed`` never raises for a bad file, only returns a verdict."""

    def __init__(self, params: FeatureParams, max_bytes: int, timeout_s: float) -> None:
        self.params = params
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.restarts = 0
        self._buf = b""

    def __enter__(self) -> EmbedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the child now if it is not running (:meth:`embed` otherwise starts it on first use)."""
        if self.proc is None:
            self._start()

    def _start(self) -> None:
        env = {**os.environ, **_ONE_THREAD}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "pipelines.features.worker", self.params.model_dump_json(), str(self.max_bytes)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=_PROJECT_ROOT)
        self.pid = self.proc.pid
        self._buf = b""
        try:
            hello = json.loads(self._read_line(time.monotonic() + _STARTUP_TIMEOUT_S))
        except (TimeoutError, EOFError) as exc:
            self._kill()
            raise WorkerDied(f"the embedding worker did not start: {exc}") from exc
        if not hello.get("ready"):
            self._kill()
            raise WorkerDied(f"the embedding worker did not start: {hello}")

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
        self.proc = None

    def close(self) -> None:
        """Ask the child to exit (end of input); kill it if it does not."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _fill(self, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no answer within {self.timeout_s:g} s")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            code = self.proc.wait()
            raise EOFError(f"the worker exited with code {code}")
        self._buf += chunk

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            self._fill(deadline)
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def embed(self, path: str, size: int | None = None, mtime_ns: int | None = None) -> Outcome:
        """The vector of ``path``, or a verdict; ``size``/``mtime_ns`` are what the manifest recorded."""
        if self.proc is None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        started = time.monotonic()
        deadline = started + self.timeout_s
        request = json.dumps({"path": path, "size": size, "mtime_ns": mtime_ns}) + "\n"
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
            head = json.loads(self._read_line(deadline))
            if head["ok"]:
                raw = self._read_exact(head["nbytes"], deadline)
                vec = np.frombuffer(raw, dtype=np.float32).copy()
                return Outcome(vec, head["frames_real"], seconds=time.monotonic() - started)
            return Outcome(None, 0, head["reason"], head["error_type"], head["detail"], time.monotonic() - started)
        except TimeoutError:
            log.info("%s: no result after %.1f s; killing worker %s", path, self.timeout_s, self.pid)
            self._kill()
            self.restarts += 1
            detail = f"no result within {self.timeout_s:g} s; the decoder was killed"
            return Outcome(None, 0, RejectReason.TIMEOUT, "DecodeTimeout", detail, time.monotonic() - started)
        except (EOFError, BrokenPipeError) as exc:
            log.info("%s: worker %s died (%s)", path, self.pid, exc)
            self._kill()
            self.restarts += 1
            return Outcome(None, 0, RejectReason.CORRUPT, "DecoderCrash", str(exc), time.monotonic() - started)


# ---------------------------------------------------------------------------------------------- child side


def _answer(
    path: str, size: int | None, mtime_ns: int | None, params: FeatureParams, max_bytes: int
) -> tuple[dict, bytes]:
    """One request's answer: a header dict, and the vector's bytes when the file was embedded."""
    from pipelines.audio import AudioRejected
    from pipelines.features.frontend import track_vector

    try:
        st = os.stat(path)
    except OSError as exc:
        return _verdict(RejectReason.UNREADABLE, type(exc).__name__, exc.strerror or str(exc)), b""
    if (size is not None and st.st_size != size) or (mtime_ns is not None and st.st_mtime_ns != mtime_ns):
        detail = "size or mtime differ from the manifest: re-import the catalogue (`musicrec catalogue import`)"
        return _verdict(RejectReason.UNREADABLE, "ChangedSinceImport", detail), b""
    try:
        vec = track_vector(path, params, max_bytes=max_bytes)
    except AudioRejected as exc:
        cause = exc.__cause__
        return _verdict(exc.reason, type(cause).__name__ if cause else "AudioRejected", exc.detail), b""
    except Exception as exc:  # any decoder or DSP failure is this file's problem; the build goes on
        traceback.print_exc(file=sys.stderr)
        return _verdict(RejectReason.CORRUPT, type(exc).__name__, str(exc)[:500]), b""
    payload = vec.vector.astype(np.float32, copy=False).tobytes()
    return {"ok": True, "frames_real": vec.frames_real, "nbytes": len(payload)}, payload


def _verdict(reason: str, error_type: str, detail: str) -> dict:
    return {"ok": False, "reason": str(reason), "error_type": error_type, "detail": detail}


def main() -> None:
    """Child loop: keep the protocol on a private copy of stdout so stray prints cannot corrupt it.

    Warnings (such as a file's decoder messages, :func:`pipelines.audio.decoder_output`) go to stderr in
    the CLI's format; what C decoders print there themselves is collected per file by the front end.
    """
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = FeatureParams.model_validate_json(sys.argv[1])
    max_bytes = int(sys.argv[2])

    from pipelines.features.frontend import frames_to_vector, mfcc_frames

    warm = np.random.default_rng(0).standard_normal(params.sr).astype(np.float32) * 0.1
    frames_to_vector(mfcc_frames(warm, params), params.n_frames)  # pay the first call's costs up front
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        req = json.loads(line)
        head, payload = _answer(req["path"], req.get("size"), req.get("mtime_ns"), params, max_bytes)
        out.write(json.dumps(head).encode() + b"\n" + payload)
        out.flush()


if __name__ == "__main__":
    main()
