"""A real SMTP server (aiosmtpd) for PrismWatch's email tests: saves every accepted message as
an .eml file (with the envelope recipients) in a folder; the recipient's local part picks a
failure: tempfail@ -> 451 at RCPT, permfail@ -> 550 at RCPT. With AUTH (LOGIN/PLAIN) when a
user and password are given.

Usage: python smtp.py PORT OUT_DIR [USER PASSWORD] [--starttls CERT KEY | --tls CERT KEY]
(--starttls: STARTTLS offered and required; --tls: implicit TLS from the first byte.)
"""

import os
import ssl
import sys
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

args = sys.argv[1:]
TLS_MODE, CERT, KEY = None, None, None
for mode in ("--starttls", "--tls"):
    if mode in args:
        i = args.index(mode)
        TLS_MODE, CERT, KEY = mode, args[i + 1], args[i + 2]
        args = args[:i] + args[i + 3:]
PORT, OUT = int(args[0]), args[1]
USER = args[2] if len(args) > 3 else None
PASSWORD = args[3] if len(args) > 3 else None
os.makedirs(OUT, exist_ok=True)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "tempfail":
            return "451 4.3.0 Temporary failure, try again later"
        if local == "permfail":
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(OUT, f"{time.time_ns()}-{uuid.uuid4().hex}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.replace(path + ".tmp", path)
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
    return AuthResult(success=ok)


kwargs = {}
ctx = None
if USER:
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
if TLS_MODE:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(CERT, KEY)
    if TLS_MODE == "--starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=PORT,
                        ssl_context=ctx if TLS_MODE == "--tls" else None, **kwargs)
controller.start()
print("ready", flush=True)
try:
    threading.Event().wait()
finally:
    controller.stop()
