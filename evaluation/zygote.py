"""A zygote for evaluation workers: one process imports torch and transformers once, then forks a child per
job that runs evaluation.worker. `python -m evaluation.zygote` reads one request per line on stdin and writes
the child's exit code, one per line, to the file descriptor given as its argument.

Why not multiprocessing's forkserver: it re-imports the caller's main module in every child (the `distill`
CLI, or a user's script without a `__main__` guard, which would run its pipeline again); a fork of a process
that only imported keeps none of that.

Why the figures stay honest: the zygote runs no torch op, so a child starts with no thread pool and the
modules a fresh worker would import; its peak RSS counts back the zygote's resident pages it never touched
again (evaluation.perf.note_forked_from): 600 MB against a fresh worker's 591 MB for a 4-layer student. The
child takes the caller's working folder and environment of the moment; native libraries that read the
environment when loaded (OpenMP's OMP_*) keep the zygote's, which are the caller's when the zygote started.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

PRELOAD = ("evaluation.worker", "deployment.runtimes.torch_runtime", "sdk.models",
           "transformers.models.llama.modeling_llama")


def serve(reply_fd: int) -> None:
    from evaluation.perf import note_forked_from

    # Ctrl-C reaches the whole process group: the zygote outlives it quietly (it ends when the caller does, as
    # its stdin closes), while a worker gets Python's KeyboardInterrupt, as a fresh interpreter would
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        importlib.import_module(name)
    replies = os.fdopen(reply_fd, "w")
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                note_forked_from(os.getppid())
                os.chdir(req["cwd"])
                os.environ.clear()
                os.environ.update(req["env"])
                from evaluation import worker

                worker.main(req["job"], req["out"])
                code = 0
            except BaseException:  # noqa: BLE001 - reported as the exit code, like a failed fresh worker
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        replies.write(f"{os.waitstatus_to_exitcode(status)}\n")
        replies.flush()
    # the caller has gone: nothing to keep, and tearing torch and transformers down costs seconds that a caller
    # reading this process's output (it shares the caller's stdout) would wait for
    os._exit(0)


class _Zygote:
    """The caller's side: started on first use, one per process, ended when the caller exits (its stdin closes)."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "evaluation.zygote", str(write_fd)],
                                     stdin=subprocess.PIPE, text=True, pass_fds=(write_fd,))
        os.close(write_fd)
        self.replies = os.fdopen(read_fd)
        self.pid = os.getpid()

    def run(self, job_path: Path, out_path: Path) -> int | None:
        req = {"cwd": os.getcwd(), "env": dict(os.environ), "job": str(job_path), "out": str(out_path)}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        reply = self.replies.readline()
        return int(reply) if reply else None  # no reply: the zygote died (killed, or out of memory)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - at exit: a zygote that will not stop is killed
            self.proc.kill()
        finally:
            self.replies.close()  # ended before the caller exits (ended_on_exit): no unclosed pipe left to warn of


_lock = threading.Lock()
_zygote: _Zygote | None = None


@contextlib.contextmanager
def ended_on_exit():
    """Within: a zygote started here is ended on leaving, one already running is kept. The Python API's calls
    (Project.run, a finished run's predict) leave no ~400 MB process behind in a notebook's kernel, while a
    caller that keeps its own zygote warm (the test suite, a server) keeps it; the CLI's process ends anyway."""
    before = _zygote
    try:
        yield
    finally:
        _end_unless(before)


def _end_unless(kept: _Zygote | None) -> None:
    global _zygote
    with _lock:
        started, _zygote = _zygote, _zygote if _zygote is kept else None
    if started is not None and started is not kept:
        atexit.unregister(started.close)
        started.close()


def run_forked(job_path: Path, out_path: Path) -> int:
    """evaluation.worker on the job, in a child of this process's zygote; its exit code. A zygote that died
    (or one inherited across a fork) is replaced and the job run once more."""
    global _zygote
    with _lock:
        for _ in range(2):
            if _zygote is None or _zygote.pid != os.getpid() or _zygote.proc.poll() is not None:
                _zygote = _Zygote()
                atexit.register(_zygote.close)
            code = _zygote.run(job_path, out_path)
            if code is not None:
                return code
            _zygote = None
        return 1


if __name__ == "__main__":
    from sdk.quiet import quiet_library_noise, quiet_warnings

    quiet_library_noise()
    quiet_warnings()  # peft's wrap of an adapted teacher warns here as in the caller
    serve(int(sys.argv[1]))
