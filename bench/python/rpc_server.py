#!/usr/bin/env python3
# Run: python3 bench/python/rpc_server.py --loop asyncio|uvloop --listen 127.0.0.1:0
#
# The asyncio / uvloop peer of protoloop's protobuf request/reply benchmark
# (benches/bench, workloads rpc*): the ATM demo's bank link, `GetBalance` in,
# `Response` out, each behind a 2-byte big-endian length (struct "!H"),
# replies in request order, the replies to one read written with one
# `transport.write` (as the Rust servers do).
#
# Needs the `protobuf` package (4.21 or later). There is no protoc here, so
# the message classes are built at run time from a FileDescriptorProto that
# mirrors proto/bank.proto. It speaks the benchmark's control protocol
# (see echo_server.py): "listening HOST:PORT", "cpu" -> "cpu USER_US SYS_US".
import asyncio
import struct
import threading

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from echo_server import control, parse


def bank_messages():
    """GetBalance and Response of proto/bank.proto, built without protoc."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="bank.proto", package="bank", syntax="proto2"
    )
    F = descriptor_pb2.FieldDescriptorProto
    get = fdp.message_type.add(name="GetBalance")
    get.field.add(
        name="customer_id", number=1, label=F.LABEL_REQUIRED, type=F.TYPE_STRING
    )
    resp = fdp.message_type.add(name="Response")
    resp.field.add(
        name="customer_id", number=1, label=F.LABEL_REQUIRED, type=F.TYPE_STRING
    )
    resp.field.add(name="balance", number=2, label=F.LABEL_REQUIRED, type=F.TYPE_FLOAT)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    types = pool.FindFileByName("bank.proto").message_types_by_name
    return (
        message_factory.GetMessageClass(types["GetBalance"]),
        message_factory.GetMessageClass(types["Response"]),
    )


GetBalance, Response = bank_messages()
HEADER = struct.Struct("!H")


class Bank(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        out = []
        at = 0
        n = len(buf)
        while n - at >= 2:
            (length,) = HEADER.unpack_from(buf, at)
            if n - at - 2 < length:
                break
            q = GetBalance.FromString(buf[at + 2 : at + 2 + length])
            r = Response(customer_id=q.customer_id, balance=100.0).SerializeToString()
            out.append(HEADER.pack(len(r)))
            out.append(r)
            at += 2 + length
        self.buf = buf[at:]
        if out:
            self.transport.write(b"".join(out))

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def main(host, port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Bank, host, port, backlog=1024)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening {h}:{p}", flush=True)
    threading.Thread(target=control, daemon=True).start()
    await server.serve_forever()


if __name__ == "__main__":
    kind, host, port = parse()
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(host, port))
