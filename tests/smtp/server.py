#!/usr/bin/env python3
"""Test SMTP server for policywatch's mail tests (loopback only).

Listens on 127.0.0.1 on a free port, prints "PORT <n>" on stdout once it accepts connections,
and stores every accepted message as <dir>/msg-<n>.eml with a <dir>/msg-<n>.json sidecar
(envelope, TLS and AUTH state of the session). It exits when its stdin closes, so a test that
dies cannot leave it behind.

Faults are scripted with options: --auth-reject (every login fails with 535), --max-bytes N
(messages above N bytes get 552), --tempfail N (the first N messages get 451). Each refusal
leaves <dir>/rejected-<n>.json. --reject-rcpt ADDR (repeatable) answers 550 to RCPT TO for that
address only. --hang-after-data reads a whole message, leaves <dir>/hung-<n>.json, and then
never answers (a relay gone silent at the worst moment). --port N binds a given port (to bring
a "down" server back).

Needs aiosmtpd:  python3 -m pip install aiosmtpd
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import threading

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # the Rust test checks for this first; say it plainly anyway
    print("aiosmtpd is missing: python3 -m pip install aiosmtpd", file=sys.stderr)
    sys.exit(3)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="where received messages are stored")
    p.add_argument("--mode", choices=["starttls", "tls", "plain"], default="starttls")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    p.add_argument("--cert", help="PEM certificate chain (starttls, tls)")
    p.add_argument("--key", help="PEM private key (starttls, tls)")
    p.add_argument("--user", help="accepted login (AUTH offered when set)")
    p.add_argument("--password", help="accepted password")
    p.add_argument("--auth-reject", action="store_true", help="every login fails (535)")
    p.add_argument("--max-bytes", type=int, default=0, help="552 for bigger messages")
    p.add_argument("--tempfail", type=int, default=0, help="451 for the first N messages")
    p.add_argument("--reject-rcpt", action="append", default=[],
                   help="550 to RCPT TO for this address (repeatable)")
    p.add_argument("--hang-after-data", action="store_true",
                   help="take the message, then never send the final reply")
    return p.parse_args()


class Handler:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.tempfails_left = args.tempfail
        self.rejected = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in (a.lower() for a in self.args.reject_rcpt):
            self.rejected += 1
            path = os.path.join(self.args.dir, f"rejected-{self.rejected}.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"code": 550, "rcpt": address}, f)
            os.replace(path + ".tmp", path)
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content or b""
        if self.args.hang_after_data:
            self.hung = getattr(self, "hung", 0) + 1
            path = os.path.join(self.args.dir, f"hung-{self.hung}.json")
            with open(path[:-5] + ".eml", "wb") as f:
                f.write(content)
            with open(path + ".tmp", "w") as f:
                json.dump({"rcpt_tos": envelope.rcpt_tos, "bytes": len(content)}, f)
            os.replace(path + ".tmp", path)
            await asyncio.Event().wait()  # never set: this session never gets its reply
        if self.tempfails_left > 0:
            self.tempfails_left -= 1
            return self.refuse(451, "4.3.0 Temporary failure, try again later", content)
        if self.args.max_bytes and len(content) > self.args.max_bytes:
            return self.refuse(552, "5.3.4 Message size exceeds fixed maximum message size", content)
        self.count += 1
        base = os.path.join(self.args.dir, f"msg-{self.count}")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None or self.args.mode == "tls",
            "authenticated": bool(session.authenticated),
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "bytes": len(content),
        }
        # Write to a temporary name and rename, so a reader never sees half a message.
        for ext, data in ((".eml", content), (".json", json.dumps(meta).encode())):
            with open(base + ext + ".tmp", "wb") as f:
                f.write(data)
            os.replace(base + ext + ".tmp", base + ext)
        return f"250 2.0.0 OK queued as test-{self.count}"


    def refuse(self, code, text, content):
        """Refuses the message, leaving <dir>/rejected-<n>.json so tests can count attempts."""
        self.rejected += 1
        path = os.path.join(self.args.dir, f"rejected-{self.rejected}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"code": code, "bytes": len(content)}, f)
        os.replace(path + ".tmp", path)
        return f"{code} {text}"


def make_authenticator(args):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if args.auth_reject or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = (auth_data.login.decode() == args.user
              and auth_data.password.decode() == args.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return authenticate


def main():
    args = parse_args()
    # aiosmtpd warns about its own deprecated attributes on every login; keep test output clean.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    ctx = None
    if args.mode in ("starttls", "tls"):
        if not (args.cert and args.key):
            sys.exit("--cert and --key are needed for TLS modes")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    handler = Handler(args)
    offer_auth = bool(args.user) or args.auth_reject

    def factory():
        return SMTP(
            handler,
            hostname="policywatch-test-smtp",
            tls_context=ctx if args.mode == "starttls" else None,
            require_starttls=args.mode == "starttls",
            # With implicit TLS the whole connection is encrypted; aiosmtpd only knows about
            # STARTTLS, so tell it not to insist.
            auth_require_tls=args.mode == "starttls",
            auth_required=offer_auth,
            authenticator=make_authenticator(args) if offer_auth else None,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(
        factory, host="127.0.0.1", port=args.port, ssl=ctx if args.mode == "tls" else None))
    port = server.sockets[0].getsockname()[1]

    def watch_stdin():
        sys.stdin.read()  # returns at EOF: the test is gone
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"PORT {port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
