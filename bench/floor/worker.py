"""The floor's worker: pull up to 100 requests at a time, write each result to the bucket, ack.

It sends its own pull requests rather than calling nats-py's `fetch(100)`, which, once a first
message came, waits out its whole timeout for the rest of the batch: messages are taken as they
arrive, and whatever arrived while a batch was written is the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

from nats.aio.msg import Msg

from bench.floor import common

EXPIRES = 2.0
"""Seconds a pull request stays open on the server."""
RESULT = b'{"ok":true}'
"""The no-op handler's result."""


async def main() -> None:
    """Pull, write, ack until stopped."""
    nc = await common.connect()
    js = nc.jetstream()
    pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{common.STREAM}.{common.CONSUMER}"
    inbox = nc.new_inbox()
    arrived: list[Msg] = []
    changed = asyncio.Event()
    outstanding = 0
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        changed.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    async def on_message(msg: Msg) -> None:
        nonlocal outstanding
        if msg.headers and msg.headers.get("Status"):
            if msg.headers["Status"] != "100":  # 404, 408, 409: this pull request is over
                outstanding = 0
        else:
            arrived.append(msg)
            outstanding -= 1
        changed.set()

    async def work(batch: list[Msg]) -> None:
        written = []
        for msg in batch:
            json.loads(msg.data)  # what a handler would be given
            request_id = msg.subject[len(common.SUBJECT_PREFIX) :]
            written.append(await js.publish_async(common.KV_PREFIX + request_id, RESULT))
        await asyncio.gather(*written)
        for msg in batch:
            await msg.ack()

    await nc.subscribe(inbox, cb=on_message)
    deadline = 0.0
    try:
        while not stopping.is_set():
            if outstanding <= 0 or loop.time() > deadline:
                outstanding = common.BATCH
                deadline = loop.time() + EXPIRES + 1.0
                body = {"batch": common.BATCH, "expires": int(EXPIRES * 1e9)}
                await nc.publish(pull_subject, json.dumps(body).encode(), reply=inbox)
            if not arrived:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), EXPIRES + 1.0)
                continue
            batch, arrived[:] = list(arrived), []
            await work(batch)
    finally:
        with contextlib.suppress(Exception):
            await nc.flush(1)
        await common.close(nc)


if __name__ == "__main__":
    common.run(main)
