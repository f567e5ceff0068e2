"""Starting isolated runs: a warm zygote that forks each one, or a fresh interpreter where fork is not safe.

Why a zygote: a child spent 5-7 s importing torch, transformers and peft before it could start
(peft alone 3.5 s on 2 cores), 6 times per default sweep. The zygote (``python -m
benchmark.launch.zygote``) imports them once and forks a child per run: the child is still a fresh
process (no CUDA context, no allocator state, no model; the zygote never touches CUDA, which is
what makes forking safe), but it starts in milliseconds. This is multiprocessing's
forkserver-with-preload, with the run's exit status, signal and peak RSS (``wait4``) reported back.

Both launchers give the same interface: ``spawn(spec, imports, stderr_path) -> pid`` and
``wait(pid) -> (exit code, ru_maxrss MB)``, where a negative code is the killing signal. A child's
stderr goes to a file (``FileTee`` shows it live and keeps its tail for the log of a crash).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmark.launch.envvars import ENV_IMPORTS, ENV_PARENT

ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"
ALLOC_DEFAULT = "expandable_segments:True"
STDERR_TAIL = 64 * 1024


def alloc_env(env: dict[str, str]) -> dict[str, str]:
    """The caching allocator's settings for a child: ``expandable_segments`` unless the user chose.

    Why: with fixed-size segments the allocator kept 65.6 GB reserved for FFT's 33.4 GB allocated
    on an H100 (fragmentation from a different item count every step); expandable segments held
    33.9 GB. The setting a run trained under is in its record (``memory.alloc_conf``).
    """
    if env.get(ALLOC_ENV) or env.get("PYTORCH_ALLOC_CONF"):
        return {}
    return {ALLOC_ENV: ALLOC_DEFAULT}


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every isolated run starts with (set before torch sees CUDA)."""
    env = dict(os.environ if base is None else base)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # device indices as NVML and nvidia-smi count them
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault leaves a Python traceback in the log
    env[ENV_PARENT] = str(os.getpid())  # children die with us (child.die_with_parent)
    env.update(alloc_env(env))
    return env


class FileTee(threading.Thread):
    """Copies a growing file (a child's stderr) to ours as it comes; keeps its last bytes."""

    def __init__(self, path: Path, sink=None):
        super().__init__(daemon=True, name="stderr-tee")
        self.path, self.sink = path, sink
        self.tail = bytearray()
        self.finished = threading.Event()

    def run(self) -> None:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with open(self.path, "rb") as fh:
            while True:
                chunk = fh.read(65536)
                if not chunk:
                    if self.finished.is_set():
                        break
                    time.sleep(0.05)
                    continue
                self.tail += chunk
                del self.tail[:-STDERR_TAIL]
                try:
                    sink = self.sink or sys.stderr
                    sink.write(decoder.decode(chunk))
                    sink.flush()
                except (OSError, ValueError):
                    pass

    def stop(self, timeout: float = 5.0) -> None:
        """The child is gone: copy what is left, then end."""
        self.finished.set()
        self.join(timeout)

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")


# --------------------------------------------------------------------------- the parent's side


class PopenLauncher:
    """A fresh interpreter per run (``python -m benchmark.launch.child SPEC``)."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.procs: dict[int, subprocess.Popen] = {}
        self.start_s = 0.0

    def spawn(self, spec: Path, imports: list[str], stderr: Path) -> int:
        env = {**self.env, ENV_IMPORTS: ",".join(imports)}
        with open(stderr, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "benchmark.launch.child", str(spec)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs[proc.pid] = proc
        return proc.pid

    def wait(self, pid: int) -> tuple[int, float | None]:
        return self._reap(pid, 0)

    def poll(self, pid: int) -> tuple[int, float | None] | None:
        """``wait(pid)`` if the run has ended, else None at once."""
        return self._reap(pid, os.WNOHANG)

    def _reap(self, pid: int, options: int) -> tuple[int, float | None] | None:
        try:
            done, status, usage = os.wait4(pid, options)
        except ChildProcessError:  # already reaped elsewhere
            return self.procs.pop(pid).wait(), None
        if not done:
            return None
        proc = self.procs.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, _ru_mb(usage.ru_maxrss)

    def close(self) -> None:
        pass


ZYGOTE_LOST = -1000  # the exit "code" of a run whose zygote died under it (not a signal number)


class ZygoteLauncher:
    """Forks runs from a warm zygote process (Linux). The zygote is a helper: if it dies (killed, the
    OOM killer), the runs it forked die with it (``PR_SET_PDEATHSIG``) and end as failed runs
    (``ZYGOTE_LOST``), and the next spawn starts a new zygote; the sweep goes on."""

    def __init__(self, env: dict[str, str]):
        t0 = time.perf_counter()
        self.env = env
        self.exits: dict[int, tuple[int, float | None]] = {}
        self.running: set[int] = set()
        self.restarts = 0
        self._start()
        self.start_s = time.perf_counter() - t0

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmark.launch.zygote"], env=self.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.dead = False
        msg = self._read()
        if msg.get("ready") is not True:
            raise RuntimeError(f"the zygote did not start (exit code {self.proc.poll()})")

    def _read(self) -> dict[str, Any]:
        """The zygote's next message ({} once it is gone); every exit it reports is kept for ``wait``/``poll``."""
        line = self.proc.stdout.readline() if not self.dead else b""
        if not line:
            self._lost()
            return {}
        msg = json.loads(line)
        if "spawned" in msg:
            self.running.add(msg["pid"])
        if "exited" in msg:
            self.running.discard(msg["exited"])
            self.exits[msg["exited"]] = (msg["code"], _ru_mb(msg["ru_maxrss"]))
        return msg

    def _lost(self) -> None:
        """The zygote is gone: its runs end as ``ZYGOTE_LOST`` once their processes are gone too."""
        if self.dead:
            return
        self.dead = True
        for pid in self.running:
            end_process(pid, term_grace_s=5.0)  # it had SIGTERM already (PR_SET_PDEATHSIG)
            self.exits[pid] = (ZYGOTE_LOST, None)
        self.running.clear()

    def _until(self, key: str, value: Any) -> dict[str, Any]:
        while True:
            msg = self._read()
            if self.dead:
                raise RuntimeError(f"the zygote exited (code {self.proc.poll()})")
            if msg.get(key) == value:
                return msg

    def spawn(self, spec: Path, imports: list[str], stderr: Path) -> int:
        stderr.touch()  # exists before the child does: the tee opens it at once
        req = (json.dumps({"spawn": str(spec), "imports": ",".join(imports), "stderr": str(stderr)}) + "\n").encode()
        try:
            return self._request(req, str(spec))
        except (OSError, RuntimeError):  # the zygote died between runs: a new one, and one more try
            self._lost()
            return self._request(req, str(spec))

    def _request(self, req: bytes, spec: str) -> int:
        """One spawn request to a live zygote (started anew if the last one is gone): the child's pid."""
        if self.dead:
            print(f"iisan-bench: warning: the zygote (exit code {self.proc.poll()}) is gone; starting a new one",
                  file=sys.stderr)
            self.restarts += 1
            self._start()
        self.proc.stdin.write(req)
        return self._until("spawned", spec)["pid"]

    def wait(self, pid: int) -> tuple[int, float | None]:
        while pid not in self.exits and not self.dead:
            self._read()
        return self.exits.pop(pid, (ZYGOTE_LOST, None))

    def poll(self, pid: int) -> tuple[int, float | None] | None:
        """``wait(pid)`` if the run has ended, else None at once (reads only whole waiting messages)."""
        import select

        while pid not in self.exits and not self.dead and select.select([self.proc.stdout], [], [], 0)[0]:
            self._read()
        if self.dead and pid not in self.exits:
            return ZYGOTE_LOST, None
        return self.exits.pop(pid, None)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process: a zombie (dead, not yet reaped: an orphan under an init
    that does not reap) counts as gone; someone else's live process counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def end_process(pid: int, term_grace_s: float = 10.0, kill_grace_s: float = 5.0) -> None:
    """The one way a run's process is ended: SIGTERM (it may clean up), SIGKILL after ``term_grace_s``,
    then wait up to ``kill_grace_s`` until it is gone (a zombie counts as gone: ``alive``)."""
    import signal

    for sig, grace in ((signal.SIGTERM, term_grace_s), (signal.SIGKILL, kill_grace_s)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def launcher(env: dict[str, str]):
    """The zygote where fork is safe and available (Linux), else a fresh interpreter per run."""
    if sys.platform.startswith("linux") and os.environ.get("IISAN_BENCH_NO_ZYGOTE") != "1":
        try:
            return ZygoteLauncher(env)
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"iisan-bench: warning: no zygote ({exc}); a fresh interpreter per run", file=sys.stderr)
    return PopenLauncher(env)


def _ru_mb(kb: int | None) -> float | None:
    if kb is None:
        return None
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024
