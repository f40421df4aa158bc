"""A real SMTP server (aiosmtpd) for PrismWatch's email tests: saves every accepted message as
an .eml file (with the envelope recipients) in a folder; the recipient's local part picks a
failure: tempfail@ -> 451 at RCPT, permfail@ -> 550 at RCPT. With AUTH (LOGIN/PLAIN) when a
user and password are given.

Usage: python smtp.py PORT OUT_DIR [USER PASSWORD]
"""

import os
import sys
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

PORT, OUT = int(sys.argv[1]), sys.argv[2]
USER = sys.argv[3] if len(sys.argv) > 4 else None
PASSWORD = sys.argv[4] if len(sys.argv) > 4 else None
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
if USER:
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=PORT, **kwargs)
controller.start()
print("ready", flush=True)
try:
    threading.Event().wait()
finally:
    controller.stop()
