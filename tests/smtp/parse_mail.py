#!/usr/bin/env python3
"""Parses stored messages with Python's own email package (independent of lettre) and prints
JSON: every header (decoded), and every leaf part's content type, charset and decoded text.
One file: one JSON document. Several: one JSON document per line, in order."""

import json
import sys
from email import policy
from email.parser import BytesParser


def parse(path):
    with open(path, "rb") as f:
        msg = BytesParser(policy=policy.default).parse(f)
    out = {
        "headers": [[k, str(v)] for k, v in msg.items()],
        "content_type": msg.get_content_type(),
        "defects": [str(d) for d in msg.defects],
        "parts": [],
    }
    for part in msg.walk():
        if part.is_multipart():
            continue
        out["parts"].append({
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "text": part.get_content(),
            "defects": [str(d) for d in part.defects],
        })
    return out


def main():
    if len(sys.argv) == 2:
        json.dump(parse(sys.argv[1]), sys.stdout, ensure_ascii=False)
        return
    for path in sys.argv[1:]:
        sys.stdout.write(json.dumps(parse(path), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
