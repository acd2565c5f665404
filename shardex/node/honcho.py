"""Running under honcho (the Procfile): how many engines it was asked for, and which one we are.

``.env`` says ``SHARDEX_SHARDS=auto``: the router and each engine read the engine concurrency from
the command line of the honcho that started them, so ``honcho start -c engine=4`` sizes the
cluster without editing a file; each engine takes its index from ``HONCHO_PROCESS_NAME``.
"""

from __future__ import annotations

import os


def _is_honcho(argv: list[str]) -> bool:
    return any(os.path.basename(a) == "honcho" or a.endswith("/honcho") for a in argv[:2]) or (
        len(argv) > 2 and argv[1:3] == ["-m", "honcho"]
    )


def _concurrency(argv: list[str], process_type: str, default: int | None = 1) -> int | None:
    conc = None
    for i, a in enumerate(argv):
        if a in ("-c", "--concurrency") and i + 1 < len(argv):
            conc = argv[i + 1]
        elif a.startswith("--concurrency="):
            conc = a.split("=", 1)[1]
    if conc:
        for item in conc.split(","):
            name, _, k = item.partition("=")
            if name.strip() == process_type and k.strip().isdigit():
                return int(k)
    return default


def honcho_concurrency(
    process_type: str, pid: int | None = None, default: int | None = 1
) -> int | None:
    """The ``-c NAME=K`` of the honcho that started us (walking up parent processes through
    /proc), else ``default`` (honcho's own: 1) when under honcho without it, else None (not
    under honcho). The account tier passes ``default=0``: it is on only when asked for."""
    pid = os.getppid() if pid is None else pid
    for _ in range(6):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{pid}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if _is_honcho(argv):
            return _concurrency(argv, process_type, default)
        pid = ppid
        if pid <= 1:
            return None
    return None


def honcho_index(env: dict[str, str] | None = None) -> int | None:
    """This process's 0-based index from ``HONCHO_PROCESS_NAME`` (``engine.3`` → 2), or None."""
    name = (os.environ if env is None else env).get("HONCHO_PROCESS_NAME", "")
    kind, _, num = name.rpartition(".")
    if kind and num.isdigit():
        return int(num) - 1  # honcho numbers processes from 1
    return None
