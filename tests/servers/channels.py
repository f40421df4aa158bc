"""Loopback stand-ins for the notification services, for PrismWatch's tests.

Each path checks the request against the service's documented format (and answers the way
the service does when it is wrong), records it, and answers as scripted:

  POST /webhook/<name>                         Alertmanager webhook v4 receiver
  POST /slack/<name>                           Slack incoming webhook
  POST /dingtalk/<name>?access_token=&timestamp=&sign=   DingTalk custom robot (signature
                                               verified here with DingTalk's own algorithm)
  POST /pagerduty/<name>                       PagerDuty Events API v2
  POST /telegram/bot<token>/sendMessage        Telegram Bot API

Control (JSON): POST /_script {"path": "/slack/a", "actions": ["500", "timeout:3", "429:1",
"errcode:310000", "ok"]} queues answers for a path (then "ok" again); GET /_requests lists
what arrived; POST /_reset forgets everything.

Usage: python channels.py PORT DINGTALK_SECRET [DINGTALK_LIMIT DINGTALK_WINDOW_SECONDS]
"""

import base64
import hashlib
import hmac
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
DINGTALK_SECRET = sys.argv[2]
DINGTALK_LIMIT = int(sys.argv[3]) if len(sys.argv) > 3 else 20
DINGTALK_WINDOW = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0

lock = threading.Lock()
requests = []  # every request: path, headers, body, time, verdict
scripts = {}  # path -> [action, ...]
dingtalk_sends = {}  # path -> [times of accepted messages]

GO_ZERO = "0001-01-01T00:00:00Z"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


def problem_webhook(body):
    m = json.loads(body)
    keys = ["receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations",
            "externalURL", "version", "groupKey", "truncatedAlerts"]
    if list(m.keys()) != keys:
        return f"keys {list(m.keys())} != {keys}"
    if m["version"] != "4" or not m["groupKey"]:
        return "version or groupKey"
    if not body.endswith(b"\n"):
        return "no trailing newline (Go's encoder writes one)"
    for a in m["alerts"]:
        if list(a.keys()) != ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]:
            return f"alert keys {list(a.keys())}"
        if a["status"] not in ("firing", "resolved"):
            return "alert status"
        if not TIME.match(a["startsAt"]):
            return f"startsAt {a['startsAt']}"
        if a["status"] == "firing" and a["endsAt"] != GO_ZERO:
            return "a firing alert's endsAt must be Go's zero time"
        if a["status"] == "resolved" and not TIME.match(a["endsAt"]):
            return "endsAt"
    firing = any(a["status"] == "firing" for a in m["alerts"])
    if m["status"] != ("firing" if firing else "resolved"):
        return "top-level status inconsistent with the alerts"
    for ch in "<>&":
        if ch.encode() in body:
            return f"{ch!r} not escaped as Go does"
    return None


def problem_slack(body):
    m = json.loads(body)
    blocks = m.get("blocks", [])
    if blocks and not m.get("text"):
        return "no_text"
    if len(blocks) > 50:
        return "invalid_blocks: more than 50"
    for b in blocks:
        if b["type"] == "header" and len(b["text"]["text"]) > 150:
            return "invalid_blocks: header over 150"
        if b["type"] == "section":
            if len(b["text"]["text"]) > 3000 or len(b.get("fields", [])) > 10:
                return "invalid_blocks: section"
    return None


def problem_pagerduty(body):
    e = json.loads(body)
    if e.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "event_action"
    if not e.get("routing_key") or len(e.get("dedup_key", "")) > 255 or not e.get("dedup_key"):
        return "routing_key or dedup_key"
    if e["event_action"] == "trigger":
        p = e.get("payload", {})
        if not p.get("summary") or len(p["summary"]) > 1024 or not p.get("source"):
            return "payload summary/source"
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            return "payload severity"
    return None


TG_TAGS = re.compile(r"</?([a-z-]+)(\s[^>]*)?>")


def problem_telegram(body):
    m = json.loads(body)
    if m.get("parse_mode") != "HTML" or "chat_id" not in m:
        return "parse_mode/chat_id"
    text = m.get("text", "")
    for tag in TG_TAGS.findall(text):
        if tag[0] not in ("b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote", "tg-spoiler", "span"):
            return f"Bad Request: can't parse entities: unsupported tag {tag[0]}"
    stripped = TG_TAGS.sub("", text)
    if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", stripped) or "<" in stripped or ">" in stripped:
        return "Bad Request: can't parse entities"
    if len(html_unescape(stripped)) > 4096:
        return "Bad Request: message is too long"
    return None


def html_unescape(s):
    return s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")


def dingtalk_check(path, query, body):
    """Returns (errcode, errmsg) as DingTalk would."""
    ts = query.get("timestamp", [None])[0]
    sign = query.get("sign", [None])[0]  # parse_qs already URL-decoded it once
    if ts is None or sign is None:
        return 310000, "sign not match"
    if abs(int(ts) / 1000 - time.time()) > 3600:
        return 310000, "invalid timestamp"
    string_to_sign = f"{ts}\n{DINGTALK_SECRET}".encode()
    expected = base64.b64encode(hmac.new(DINGTALK_SECRET.encode(), string_to_sign, hashlib.sha256).digest()).decode()
    if sign != expected:
        return 310000, "sign not match"
    if len(body) > 20000:
        return 460101, "message too long, exceed 20000 bytes"
    m = json.loads(body)
    if m.get("msgtype") not in ("markdown", "actionCard", "text"):
        return 40035, "msgtype"
    now = time.time()
    sends = [t for t in dingtalk_sends.get(path, []) if t > now - DINGTALK_WINDOW]
    if len(sends) >= DINGTALK_LIMIT:
        dingtalk_sends[path] = sends
        return 130101, f"send too fast, exceed {DINGTALK_LIMIT} times per minute"
    sends.append(now)
    dingtalk_sends[path] = sends
    return 0, "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json", headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_requests":
            with lock:
                self.reply(200, json.dumps(requests))
        else:
            self.reply(404, "{}")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        if path == "/_script":
            s = json.loads(body)
            with lock:
                scripts.setdefault(s["path"], []).extend(s["actions"])
            return self.reply(200, "{}")
        if path == "/_reset":
            with lock:
                requests.clear(); scripts.clear(); dingtalk_sends.clear()
            return self.reply(200, "{}")
        with lock:
            queue = scripts.get(path, [])
            action = queue.pop(0) if queue else "ok"
        record = {"path": path, "query": url.query, "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode("utf-8", "replace"), "time": time.time(), "answer": action}
        kind = path.split("/")[1]
        # Scripted faults first (the service being down does not look at the payload).
        if action.startswith("timeout"):
            time.sleep(float(action.split(":")[1]))
            action = "ok"
        if action == "500":
            record["answer"] = "500"
            with lock:
                requests.append(record)
            return self.reply(500, "rollup_error" if kind == "slack" else '{"error":"boom"}', "text/plain")
        if action.startswith("429"):
            secs = action.split(":")[1]
            with lock:
                requests.append(record)
            if kind == "telegram":
                return self.reply(429, json.dumps({"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {secs}", "parameters": {"retry_after": int(secs)}}))
            return self.reply(429, '{"error":"rate limited"}', headers={"Retry-After": secs})
        if action == "400":
            with lock:
                requests.append(record)
            return self.reply(400, "invalid_payload", "text/plain")
        problem = None
        try:
            if kind == "webhook":
                problem = problem_webhook(body)
            elif kind == "slack":
                problem = problem_slack(body)
            elif kind == "pagerduty":
                problem = problem_pagerduty(body)
            elif kind == "telegram":
                problem = problem_telegram(body)
        except Exception as e:  # a body the service cannot read
            problem = f"unreadable: {e}"
        record["problem"] = problem
        if kind == "dingtalk":
            if action.startswith("errcode:"):
                code, msg = int(action.split(":")[1]), "scripted"
            else:
                with lock:
                    code, msg = dingtalk_check(path, query, body)
            record["errcode"] = code
            with lock:
                requests.append(record)
            return self.reply(200, json.dumps({"errcode": code, "errmsg": msg}))
        with lock:
            requests.append(record)
        if problem:
            if kind == "telegram":
                return self.reply(400, json.dumps({"ok": False, "error_code": 400, "description": problem}))
            return self.reply(400, problem, "text/plain")
        if kind == "slack":
            return self.reply(200, "ok", "text/plain")
        if kind == "pagerduty":
            e = json.loads(body)
            return self.reply(202, json.dumps({"status": "success", "message": "Event processed", "dedup_key": e["dedup_key"]}))
        if kind == "telegram":
            return self.reply(200, json.dumps({"ok": True, "result": {"message_id": len(requests), "date": int(time.time()), "chat": {"id": -100, "type": "supergroup"}}}))
        return self.reply(200, "{}")


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
