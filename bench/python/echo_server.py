#!/usr/bin/env python3
# Run: python3 bench/python/echo_server.py --loop asyncio|uvloop --listen 127.0.0.1:0
#
# The asyncio / uvloop peer of protoloop's benchmark (benches/bench): the
# textbook Protocol-based echo server, with flow control. It speaks the
# benchmark's control protocol: prints "listening HOST:PORT" once it
# accepts, answers each "cpu" line on stdin with "cpu USER_US SYS_US" (its
# own getrusage), and exits when stdin closes.
import argparse
import asyncio
import os
import resource
import sys
import threading


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def control():
    # Sleeps in read(0) between questions, off the event loop's thread.
    for line in sys.stdin:
        if line.strip() == "cpu":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            print(f"cpu {int(ru.ru_utime * 1e6)} {int(ru.ru_stime * 1e6)}", flush=True)
    os._exit(0)


async def main(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, backlog=1024)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening {h}:{p}", flush=True)
    threading.Thread(target=control, daemon=True).start()
    await server.serve_forever()


def parse():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    return a.loop, host, int(port)


if __name__ == "__main__":
    kind, host, port = parse()
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(host, port))
