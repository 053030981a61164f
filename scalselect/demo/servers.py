"""Local servers that stand in for remote storage in tests and benchmarks, offline.

- :class:`FileServer`: a folder over HTTP (ranged requests, ETags), with a chosen delay
  per request, to measure what a slow store does to the image loader.
- :class:`S3Server`: moto's S3-compatible server on a local port, with its buckets filled
  from local folders, stopped and started again at will (its objects survive: they live
  in this process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Credentials of the test server: moto accepts any unless told to check them.
TEST_KEY_ID, TEST_SECRET = "testing-key-id", "testing-secret"


class _Handler(SimpleHTTPRequestHandler):
    """Files of the server's folder, with ``Range`` requests, ``ETag`` and a delay."""

    server: FileServer._Server
    protocol_version = "HTTP/1.1"  # keep-alive connections, as object stores allow

    def log_message(self, *args: Any) -> None:  # the tests' output stays quiet
        pass

    def _file(self) -> Path | None:
        path = Path(self.translate_path(self.path))
        return path if path.is_file() else None

    def _headers(self, path: Path, length: int, status: HTTPStatus,
                 extra: dict[str, str]) -> None:
        stat = path.stat()
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
        time.sleep(self.server.latency)
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self._headers(path, path.stat().st_size, HTTPStatus.OK, {})

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        time.sleep(self.server.latency)
        self.server.requests += 1
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        first, last = 0, size - 1
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            start, _, end = wanted[6:].partition("-")
            first = int(start) if start else max(0, size - int(end))
            last = min(int(end), size - 1) if end and start else last
        if first >= size and size:
            self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            return
        with open(path, "rb") as handle:
            handle.seek(first)
            body = handle.read(last - first + 1)
        self.server.bytes_sent += len(body)
        if wanted:
            self._headers(path, len(body), HTTPStatus.PARTIAL_CONTENT,
                          {"Content-Range": f"bytes {first}-{last}/{size}"})
        else:
            self._headers(path, len(body), HTTPStatus.OK, {})
        self.wfile.write(body)


class FileServer:
    """Serve ``root`` over HTTP on a free local port, each request delayed by
    ``latency`` seconds (as a distant store would); a context manager.

    ``url`` is the base URL; ``requests`` and ``bytes_sent`` count what was served.
    """

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # many clients connect at once
        latency = 0.0
        requests = 0
        bytes_sent = 0

    def __init__(self, root: str | os.PathLike, latency: float = 0.0) -> None:
        root = str(root)

        def handler(*args: Any) -> _Handler:
            return _Handler(*args, directory=root)

        self._server = self._Server(("127.0.0.1", 0), handler)
        self._server.latency = latency
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def bytes_sent(self) -> int:
        return self._server.bytes_sent

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class S3Server:
    """moto's S3-compatible server on a free local port, for tests; a context manager.

    :meth:`environment` is what a client needs (endpoint and test credentials);
    :meth:`upload` copies a folder into a bucket; :meth:`stop` and :meth:`start` take it
    down (its port refusing connections) and up again on the same port, keeping the
    objects; :meth:`outage_after` arms an outage at a chosen request, so that a job sees
    the store go away in the middle of its work.
    """

    def __init__(self, port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.port = port or free_port()
        self.requests = 0
        self.outages = 0
        self._wsgi: Any = None
        self._thread: threading.Thread | None = None
        self._armed: tuple[int, float] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Environment variables that point AWS clients (boto3, s3fs) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": TEST_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=TEST_KEY_ID, aws_secret_access_key=TEST_SECRET)

    def upload(self, folder: str | os.PathLike, bucket: str, prefix: str = "") -> int:
        """Copy every file under ``folder`` to ``s3://bucket/prefix...`` (the bucket is
        made when missing); returns the number of objects written."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        count = 0
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = prefix + path.relative_to(folder).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                count += 1
        return count

    def outage_after(self, requests: int, seconds: float) -> None:
        """Go down for ``seconds`` once ``requests`` more requests have been served."""
        self._armed = (self.requests + requests, seconds)

    def _app(self, app: Any) -> Any:
        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests += 1
            if self._armed and self.requests >= self._armed[0]:
                seconds, self._armed = self._armed[1], None
                self.outage(seconds)
            return app(environ, start_response)

        return counted

    def outage(self, seconds: float) -> threading.Thread:
        """Go down now, on a thread, and come back after ``seconds`` (the port refuses
        connections meanwhile); returns the thread."""
        self.stop()
        self.outages += 1

        def back() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        return thread

    def start(self) -> None:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = self._app(DomainDispatcherApplication(create_backend_app))
        self._wsgi = make_server("127.0.0.1", self.port, app, threaded=True,
                                 request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._wsgi.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port (new connections are refused)."""
        if self._wsgi is not None:
            self._wsgi.shutdown()
            self._wsgi.server_close()
            self._wsgi = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
