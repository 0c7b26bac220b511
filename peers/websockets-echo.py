"""Peer: Python's websockets package (asyncio server), its documented echo.

Usage: python websockets-echo.py HOST:PORT
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    async with serve(echo, host, int(port)) as server:
        print(f"listening on {host}:{port}", flush=True)
        await server.serve_forever()


asyncio.run(main())
