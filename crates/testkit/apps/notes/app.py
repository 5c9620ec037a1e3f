"""notes: the small web app of Atoll's end-to-end tests, on PostgreSQL and Redis.

POST /notes stores the request body as a note in PostgreSQL and counts it in Redis;
GET /notes returns every note and that count as JSON; GET /healthz checks both stores.
DATABASE_URL and REDIS_URL say where they are; PORT where to listen (8000).
"""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

DATABASE_URL = os.environ["DATABASE_URL"]
CACHE = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)


def query(sql, args=()):
    conn = psycopg2.connect(DATABASE_URL, connect_timeout=5)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def migrate():
    # A database that reports ready may still be finishing its first start-up: retry a while,
    # as real applications do.
    deadline = time.monotonic() + 60
    while True:
        try:
            query("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
            return
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise
            print(f"notes: waiting for the database: {e}".strip(), file=sys.stderr, flush=True)
            time.sleep(0.5)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/healthz":
                query("SELECT 1")
                CACHE.ping()
                self.reply(200, "ok\n", "text/plain")
            elif self.path == "/notes":
                rows = query("SELECT id, body FROM notes ORDER BY id")
                posted = int(CACHE.get("notes:posted") or 0)
                self.reply(200, {"notes": [{"id": i, "body": b} for i, b in rows], "posted": posted})
            else:
                self.reply(404, {"error": f"no such page: {self.path}"})
        except (psycopg2.Error, redis.RedisError) as e:
            self.reply(503, {"error": str(e)})

    def do_POST(self):
        if self.path != "/notes":
            self.reply(404, {"error": f"no such page: {self.path}"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if not body:
            self.reply(400, {"error": "a note needs a body"})
            return
        try:
            [(note_id,)] = query("INSERT INTO notes (body) VALUES (%s) RETURNING id", (body,))
            CACHE.incr("notes:posted")
        except (psycopg2.Error, redis.RedisError) as e:
            self.reply(503, {"error": str(e)})
            return
        self.reply(201, {"id": note_id})


if __name__ == "__main__":
    # As the container's process 1 it gets no default action for SIGTERM: stop on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    migrate()
    port = int(os.environ.get("PORT", "8000"))
    print(f"notes: listening on :{port}", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("", port), Handler).serve_forever()
