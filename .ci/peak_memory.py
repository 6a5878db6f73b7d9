"""Run a command and report the peak total resident memory of its whole process tree.

Binder gives a student 2 GB for everything: the server, the kernel, and what they start. Max RSS
of one process misses the kernel; this samples the sum over the command and all its descendants
from /proc every 50 ms.

    python .ci/peak_memory.py --limit-mb 2048 -- jupyter nbconvert --execute ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-mb", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    proc = subprocess.Popen(command)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    peak_mb = peak / 2 ** 20
    print(f"peak memory of the process tree: {peak_mb:.0f} MB (limit {args.limit_mb:.0f} MB)")
    if proc.returncode != 0:
        return proc.returncode
    if peak_mb > args.limit_mb:
        print(f"over the limit: {peak_mb:.0f} MB > {args.limit_mb:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
