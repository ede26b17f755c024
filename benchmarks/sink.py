"""A minimal Batch API endpoint for benchmarks, run as its own process: reads each body, parses it
(``parse``, what any real endpoint must do) or not (``discard``), and answers 202."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

BODY = b'{"status":"accepted"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if PARSE:
            envelope = orjson.loads(body)
            if not isinstance(envelope, dict) or "records" not in envelope:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


PARSE = len(sys.argv) < 2 or sys.argv[1] == "parse"

if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
