"""Jobs held in memory (`Runner(jobs=...)`): one job's recipients given as a generator of N UserIDs, against
the same IDs given as a list, read and validated as a run reads them (the job hash, repeats, the spool).

    .venv/bin/python bench/memory_jobs.py [N]        # default 2,000,000

Each way runs in a process of its own, which reports its peak RSS (getrusage's ru_maxrss, which includes
the interpreter and numpy) and the seconds the reading took. A generator is held a part at a time, so its
peak stays flat as N grows; a list is the caller's memory before the run begins.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import resource, sys, time
import dispatcher.jobs.streamed  # numpy and the rest, imported before the clock starts
from dispatcher.jobs.memory import MemoryJobs

n, way = int(sys.argv[1]), sys.argv[2]
ids = (f"user{i:010d}" for i in range(n))
recipients = ids if way == "generator" else list(ids)
start = time.perf_counter()
(job,) = MemoryJobs([{"GroupId": "@TGS#bench", "Content": "hi", "ToMembers_Account": recipients}]).read(500)
took = time.perf_counter() - start
assert job.recipient_count == n, job
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{way:9}  {n:>11,} IDs  {took:6.2f} s  {n / took:>10,.0f} IDs/s  peak RSS {peak:6.0f} MB")
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    with open("/proc/loadavg") as load:
        print(f"load average: {load.read().split()[:3]}")
    for way in ("generator", "list"):
        subprocess.run([sys.executable, "-c", PROBE, str(n), way], check=True)


if __name__ == "__main__":
    main()
