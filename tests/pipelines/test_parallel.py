"""Worker processes: results, failures that surface at once, and workers that run under any entry script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from pipelines import parallel

ROOT = Path(__file__).resolve().parents[2]


def _square(x: int) -> int:
    return x * x


def _die(x: int) -> int:
    if x == 3:
        os._exit(7)  # a worker killed by a crash in C code looks the same to the parent
    return x


def _pid(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def test_results_in_order_and_unordered_from_two_workers() -> None:
    items = list(range(20))
    assert list(parallel.imap(_square, items, workers=2, chunk=3)) == [x * x for x in items]
    assert sorted(parallel.imap_unordered(_square, items, workers=2)) == [x * x for x in items]
    assert len(set(parallel.imap_unordered(_pid, list(range(4)), workers=2)) - {os.getpid()}) == 2


def _malloc_env(_: int) -> dict[str, str]:
    return {k: os.environ.get(k, "") for k in parallel.WORKER_MALLOC}


def test_workers_get_the_allocator_settings_and_the_parent_keeps_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in parallel.WORKER_MALLOC:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "4096")  # the user's own value wins
    seen = list(parallel.imap_unordered(_malloc_env, [0, 1], 2))
    want = parallel.WORKER_MALLOC | {"MALLOC_TOP_PAD_": "4096"}
    assert seen == [want, want]
    assert {k: os.environ.get(k) for k in parallel.WORKER_MALLOC} == {
        "MALLOC_MMAP_THRESHOLD_": None,
        "MALLOC_TRIM_THRESHOLD_": None,
        "MALLOC_TOP_PAD_": "4096",
    }


def test_one_worker_runs_in_this_process() -> None:
    assert set(parallel.imap_unordered(_pid, [1, 2], workers=1)) == {os.getpid()}


def test_a_dead_worker_fails_the_call_instead_of_hanging() -> None:
    start = time.monotonic()
    with pytest.raises(BrokenProcessPool):
        list(parallel.imap_unordered(_die, list(range(6)), workers=2))
    assert time.monotonic() - start < 60


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "entry"
    script.write_text(
        textwrap.dedent(
            f"""\
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            # Like Airflow's entry script inside a task: importing it a second time cannot work.
            if __name__ != "__main__":
                raise SystemExit("the entry script was re-run in a worker")
            from tests.pipelines import test_parallel as t
            from pipelines import parallel
            """
        )
        + textwrap.dedent(body)
    )
    return script


def test_workers_do_not_rerun_the_parents_entry_script(tmp_path: Path) -> None:
    script = _script(tmp_path, "print(sorted(parallel.imap_unordered(t._square, list(range(8)), workers=2)))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(sorted(x * x for x in range(8)))


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """\
        import os, time
        def pids():
            for pid in parallel.imap_unordered(t._sleep_forever, [1, 2], workers=2):
                pass
        import threading
        threading.Thread(target=pids, daemon=True).start()
        time.sleep(60)
        """,
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while time.monotonic() < deadline and len(children) < 2:
            children = _children(parent.pid)
            time.sleep(0.2)
        assert len(children) >= 2, "workers did not start"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]


def _sleep_forever(_: int) -> int:
    time.sleep(600)
    return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _in_pool_process(queue: Any) -> None:
    queue.put(sorted(parallel.imap_unordered(_square, list(range(6)), workers=2)))


def test_a_celery_pool_process_can_start_workers() -> None:
    """Celery runs a task in a billiard pool process: a daemon, with billiard's process and key types."""
    import billiard

    queue = billiard.Queue()
    proc = billiard.Process(target=_in_pool_process, args=(queue,), daemon=True)
    proc.start()
    try:
        assert queue.get(timeout=120) == [x * x for x in range(6)]
    finally:
        proc.join(timeout=30)
    assert proc.exitcode == 0
