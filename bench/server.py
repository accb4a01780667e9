"""A minimal asyncio HTTP/1.1 server for the benchmark corpus, on 127.0.0.1 only.

GET /<file> serves a file of the corpus directory with a strong ETag; a matching If-None-Match
gets 304. `--delay` adds that many seconds before every answer (a slow remote source).
Keep-alive is supported. Run as `python3 bench/server.py DIR [--port N] [--delay S]`: it prints
`listening PORT` once ready, and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

MEDIA_TYPE = "application/xml; charset=utf-8"


class CorpusServer:
    def __init__(self, directory: Path, *, delay: float = 0.0) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                body = path.read_bytes()
                self.files["/" + path.name] = (body, '"' + hashlib.sha1(body).hexdigest() + '"')
        self.delay = delay

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                lines = request.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(self.response(method, target.split("?", 1)[0], headers))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def response(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        found = self.files.get(path)
        if found is None:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        body, etag = found
        if etag in {tag.strip() for tag in headers.get("if-none-match", "").split(",")}:
            return f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n".encode()
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {MEDIA_TYPE}\r\nContent-Length: {len(body)}\r\n"
            f"ETag: {etag}\r\n\r\n"
        ).encode()
        return head + (body if method != "HEAD" else b"")


async def serve(directory: Path, port: int, delay: float) -> None:
    server = await asyncio.start_server(
        CorpusServer(directory, delay=delay).handle, "127.0.0.1", port, backlog=2048
    )
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.directory, args.port, args.delay))


if __name__ == "__main__":
    main()
