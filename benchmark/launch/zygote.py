"""The zygote process (``python -m benchmark.launch.zygote``, started by ``launch.ZygoteLauncher``): it imports
torch, transformers and peft once, never touches CUDA, and forks a fresh child per request,
reporting each child's exit code and peak RSS on stdout, until its stdin closes."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from typing import Any

from benchmark.launch.envvars import ENV_IMPORTS, ENV_PARENT

PRELOAD = ("torch", "transformers", "peft", "benchmark.launch.child", "benchmark.launch.runner", "methods.registry")


def _run_child(req: dict[str, Any]) -> None:
    """In the forked child: its own stdio, environment and process group of signals, then the run."""
    code = 1
    try:
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(err, 1)  # stdout was the zygote's message channel
        os.dup2(err, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ[ENV_IMPORTS] = req["imports"]
        os.environ[ENV_PARENT] = str(os.getppid())  # the zygote; it dies with the benchmark
        import faulthandler

        faulthandler.enable()
        from benchmark.launch import child

        code = child.main([req["spawn"]])
    except BaseException:  # noqa: BLE001 - whatever happens, the zygote's loop must not run here
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    """The zygote: preload, then fork a child per request and report each exit, until stdin closes."""
    import importlib

    from benchmark.launch.child import die_with_parent

    # Ctrl-C reaches every process of the terminal's group: the benchmark handles it (its children
    # are ended, its records kept); the zygote is a helper, ended by its closed stdin, not a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    die_with_parent(int(os.environ.get(ENV_PARENT, os.getppid())))
    for mod in PRELOAD:
        importlib.import_module(mod)
    out = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
    say = lambda msg: out.write(json.dumps(msg) + "\n")  # noqa: E731
    say({"ready": True})
    stdin, running, open_ = sys.stdin.buffer, set(), True
    buf = b""
    while open_ or running:
        ready, _, _ = select.select([stdin] if open_ else [], [], [], 0.02)
        if ready:
            chunk = os.read(stdin.fileno(), 65536)
            open_ = bool(chunk)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(req)
                running.add(pid)
                say({"spawned": req["spawn"], "pid": pid})
        for pid in list(running):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                say({"exited": pid, "code": os.waitstatus_to_exitcode(status), "ru_maxrss": usage.ru_maxrss})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
