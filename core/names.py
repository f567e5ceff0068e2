"""Small helpers every layer may use (nothing here imports the rest of the package)."""

from __future__ import annotations

TPME_FILE = "tpme.json"  # OUT/tpme.json: the TPME weights of the latest sweep into OUT (the sweep writes, the reporter reads)


def safe_name(name: str) -> str:
    """A file-name-safe form of a method name ('peft:ia3' -> 'peft_ia3')."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

# a run's ranks join their process group through the job's store under this prefix (benchmark.launch.job),
# with this timeout on every collective (run.pg_timeout_s)
GROUP_ENV = "IISAN_BENCH_GROUP"
TIMEOUT_ENV = "IISAN_BENCH_PG_TIMEOUT_S"
HOST_RANKS_ENV = "IISAN_BENCH_RANKS_ON_HOST"  # ranks sharing this machine's cores (CPU threads per rank)
