#!/usr/bin/env python3
# Run: python3 bench/python/echo_server.py --loop asyncio|uvloop --listen 127.0.0.1:0
#          [--cert PEM --key PEM | --udp | --pipe]
#
# The asyncio / uvloop peer of protoloop's benchmark (benches/bench): the
# textbook Protocol-based echo server, with flow control; with --cert/--key
# behind TLS (the ssl module), with --udp a DatagramProtocol echo, with
# --pipe relayed through a `cat` child per connection. It speaks the
# benchmark's control protocol: prints "listening HOST:PORT" once it
# accepts, answers each "cpu" line on stdin with "cpu USER_US SYS_US" (its
# own getrusage), and exits when stdin closes.
import argparse
import asyncio
import os
import resource
import ssl
import subprocess
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


class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Cat(asyncio.SubprocessProtocol):
    """cat's side of the relay: what it prints goes back to the socket."""

    def __init__(self, sock):
        self.sock = sock

    def pipe_data_received(self, fd, data):
        self.sock.write(data)


class Relay(asyncio.Protocol):
    """The socket side: what arrives goes to cat's stdin."""

    def connection_made(self, transport):
        self.transport = transport
        self.cat = None
        self.stdin = None
        self.early = []
        self.lost = False
        asyncio.ensure_future(self.start())

    async def start(self):
        loop = asyncio.get_running_loop()
        cat, _ = await loop.subprocess_exec(
            lambda: Cat(self.transport), "cat", stderr=subprocess.DEVNULL
        )
        self.cat = cat
        if self.lost:
            cat.kill()
            cat.close()
            return
        self.stdin = cat.get_pipe_transport(0)
        for data in self.early:
            self.stdin.write(data)
        self.early = []

    def data_received(self, data):
        if self.stdin is None:
            self.early.append(data)
        else:
            self.stdin.write(data)

    def connection_lost(self, exc):
        self.lost = True
        if self.cat is not None:
            self.cat.kill()
            self.cat.close()


def control():
    # Sleeps in read(0) between questions, off the event loop's thread.
    for line in sys.stdin:
        if line.strip() == "cpu":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            print(f"cpu {int(ru.ru_utime * 1e6)} {int(ru.ru_stime * 1e6)}", flush=True)
    os._exit(0)


async def main(host, port, args):
    loop = asyncio.get_running_loop()
    if args.udp:
        transport, _ = await loop.create_datagram_endpoint(
            DatagramEcho, local_addr=(host, port)
        )
        h, p = transport.get_extra_info("sockname")[:2]
        print(f"listening {h}:{p}", flush=True)
        threading.Thread(target=control, daemon=True).start()
        await asyncio.Event().wait()
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
    factory = Relay if args.pipe else Echo
    server = await loop.create_server(factory, host, port, backlog=1024, ssl=tls)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening {h}:{p}", flush=True)
    threading.Thread(target=control, daemon=True).start()
    await server.serve_forever()


def parse(extra=False):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    if extra:
        ap.add_argument("--cert", metavar="PEM")
        ap.add_argument("--key", metavar="PEM")
        ap.add_argument("--udp", action="store_true")
        ap.add_argument("--pipe", action="store_true")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    if extra:
        return a.loop, host, int(port), a
    return a.loop, host, int(port)


if __name__ == "__main__":
    kind, host, port, args = parse(extra=True)
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(host, port, args))
