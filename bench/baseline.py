"""The baseline the dispatcher is measured against: a plain aiohttp + aiolimiter script sending the
same requests, with no validation, no journal, no retries. Usage:

    python bench/baseline.py JOBS.jsonl URL CONCURRENCY RATE

Credentials: the TIM_* variables, as for `dispatcher send`.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from dispatcher.tim import usersig

PATH = "/v4/group_open_http_svc/send_group_system_notification"


async def main(jobs: str, url: str, concurrency: int, rate: float) -> int:
    appid, admin, key = int(os.environ["TIM_SDKAPPID"]), os.environ["TIM_IDENTIFIER"], os.environ["TIM_SECRET_KEY"]
    sig = usersig.generate(appid, admin, key)
    prefix = f"{url}{PATH}?sdkappid={appid}&identifier={admin}&usersig={sig}&contenttype=json&random="
    limiter = AsyncLimiter(rate, 1)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=concurrency * 2)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while (body := await queue.get()) is not None:
            async with limiter, session.post(prefix + str(random.getrandbits(32)), data=body) as resp:
                doc = orjson.loads(await resp.read())
            failures += doc["ErrorCode"] != 0

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        with open(jobs, "rb") as handle:
            for line in handle:
                job = orjson.loads(line)
                await queue.put(
                    orjson.dumps({k: v for k, v in job.items() if k in ("GroupId", "Content", "ToMembers_Account")})
                )
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
