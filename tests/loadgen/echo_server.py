"""A WebSocket echo server written with Python's `websockets` (not by us),
for loadgen's tests: plain or TLS, optionally requiring a header and
choosing a subprotocol. Prints {"port": N} once it listens, then serves
until its standard input closes (so it never outlives the test).

    echo_server.py [--port N] [--tls CERT KEY]
                   [--require-header "Name: value"] [--subprotocol NAME]
                   [--delay-ms MS]
                   [--broadcast [--drop-every N] [--duplicate-every N]]

--delay-ms holds each echo that long: a connection then echoes at most
1000/MS messages a second, so throughput counts the connections sending.

--broadcast sends every message to every connection instead of echoing it;
--drop-every N skips every Nth delivery, --duplicate-every N sends every
Nth twice: faults for loadgen to find.

Port 0 (the default) picks a free one.
"""
import argparse
import asyncio
import http
import json
import ssl
import sys

from websockets.asyncio.server import serve

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
parser.add_argument("--require-header")
parser.add_argument("--subprotocol")
parser.add_argument("--delay-ms", type=float, default=0)
parser.add_argument("--broadcast", action="store_true")
parser.add_argument("--drop-every", type=int, default=0)
parser.add_argument("--duplicate-every", type=int, default=0)
args = parser.parse_args()

connected = set()
deliveries = 0


async def broadcast(ws):
    global deliveries
    connected.add(ws)
    try:
        async for message in ws:
            for peer in list(connected):
                deliveries += 1
                if args.drop_every and deliveries % args.drop_every == 0:
                    continue
                copies = 2 if args.duplicate_every and deliveries % args.duplicate_every == 0 else 1
                for _ in range(copies):
                    try:
                        await peer.send(message)
                    except Exception:
                        pass
    finally:
        connected.discard(ws)


async def echo(ws):
    async for message in ws:
        if args.delay_ms:
            await asyncio.sleep(args.delay_ms / 1000)
        await ws.send(message)


def check(connection, request):
    if args.require_header:
        name, value = (p.strip() for p in args.require_header.split(":", 1))
        if request.headers.get(name) != value:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "who are you?\n")
    return None


async def main():
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
    async with serve(
        broadcast if args.broadcast else echo,
        "127.0.0.1",
        args.port,
        ssl=context,
        process_request=check,
        subprotocols=[args.subprotocol] if args.subprotocol else None,
        compression=None,
        max_size=None,
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        # Until the test closes our standard input (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
