"""A hostile or broken EC2-style metadata service for `imds-tun record` (tests/namespace/record.rs).

Usage: record_hostile_server.py MODE. It listens on 127.0.0.1 on a port of the kernel's choice,
prints the port on stdout (one line), then serves until killed. Modes:

- self-listing: every directory lists `a/`, so `meta-data/a/a/a/...` grows without end; the
  token PUT answers 405, so a recorder must fall back to IMDSv1.
- endless: every directory lists 100 new sub-directories and a leaf: more paths than any bound.
- huge: `meta-data/` lists `small`, `big` (1 GiB with a Content-Length) and `bigger` (1 GiB
  delimited by the connection's close); both are generated lazily, never held in memory.
- heavy: `meta-data/` lists 20 leaves of 1 MiB each, more than the 16 MiB a snapshot holds.
- silent: accepts every connection and never answers (nor closes).
- echo-token: IMDSv2 only; a leaf that echoes the session token and one that holds credentials
  JSON at an unexpected path, which a recorder must both redact.
"""

import http.server
import socket
import sys

TOKEN = "HOSTILE-TOKEN-0123456789abcdef0123456789abcdef0123"
CREDENTIALS = (
    '{"Code":"Success","AccessKeyId":"ASIAHOSTILEKEY00000",'
    '"SecretAccessKey":"hostile-secret-key-value","Token":"hostile-session-token"}'
)
GIB = 1024 * 1024 * 1024
CHUNK = b"x" * 65536


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    mode = ""

    def log_message(self, *args):
        pass

    def send_text(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.mode == "echo-token" and self.path == "/latest/api/token":
            self.send_text(200, TOKEN)
        else:
            self.send_text(405, "")

    def do_GET(self):
        path = self.path
        if not path.startswith("/latest/"):
            self.send_text(404, "not found")
            return
        rest = path[len("/latest/"):]
        if self.mode == "echo-token":
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self.send_text(401, "")
                return
            answers = {
                "": "meta-data",
                "meta-data/": "echo\nelsewhere\ninstance-id",
                "meta-data/echo": "your token is " + TOKEN,
                "meta-data/elsewhere": CREDENTIALS,
                "meta-data/instance-id": "i-0hostile",
            }
            if rest in answers:
                self.send_text(200, answers[rest])
            else:
                self.send_text(404, "")
            return
        if rest == "":
            self.send_text(200, "meta-data")
        elif self.mode == "self-listing" and rest.endswith("/"):
            self.send_text(200, "a/")
        elif self.mode == "endless" and rest.endswith("/"):
            self.send_text(200, "\n".join(["leaf"] + ["d%d/" % i for i in range(100)]))
        elif self.mode == "endless":
            self.send_text(200, "v")
        elif self.mode == "heavy" and rest == "meta-data/":
            self.send_text(200, "\n".join("leaf%02d" % i for i in range(20)))
        elif self.mode == "heavy" and rest.startswith("meta-data/leaf"):
            self.send_text(200, "y" * (1024 * 1024))
        elif self.mode == "huge" and rest == "meta-data/":
            self.send_text(200, "big\nbigger\nsmall")
        elif self.mode == "huge" and rest == "meta-data/small":
            self.send_text(200, "ok")
        elif self.mode == "huge" and rest in ("meta-data/big", "meta-data/bigger"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if rest == "meta-data/big":
                self.send_header("Content-Length", str(GIB))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = 0
            try:
                while sent < GIB:
                    self.wfile.write(CHUNK)
                    sent += len(CHUNK)
            except OSError:
                self.close_connection = True
        else:
            self.send_text(404, "")


def silent(listener):
    held = []
    while True:
        connection, _ = listener.accept()
        held.append(connection)


def main():
    mode = sys.argv[1]
    if mode == "silent":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        print(listener.getsockname()[1], flush=True)
        silent(listener)
        return
    Handler.mode = mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
