#!/usr/bin/env python3
"""Parses stored messages with Python's own email package (independent of lettre) and prints
JSON: every header (decoded), the message's size in bytes, and every leaf part's content type,
charset and decoded text. HTML parts are also read with Python's html.parser (independent of
our renderer): every tag name, every href, the lang attribute of each element that has one
(with the text inside it), and the text of <style> elements.
One file: one JSON document. Several: one JSON document per line, in order."""

import json
import sys
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser


class Html(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.hrefs = []
        self.langs = []
        self.styles = []
        self.stack = []  # (tag, index into langs or None)
        self.in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "href" in a:
            self.hrefs.append(a["href"])
        idx = None
        if "lang" in a:
            idx = len(self.langs)
            self.langs.append({"tag": tag, "lang": a["lang"], "text": ""})
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append((tag, idx))
        self.in_style = tag == "style"

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        if tag == "style":
            self.in_style = False

    def handle_data(self, data):
        if self.in_style:
            self.styles.append(data)
        for _, idx in self.stack:
            if idx is not None:
                self.langs[idx]["text"] += data


def parse(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    out = {
        "size": len(raw),
        "headers": [[k, str(v)] for k, v in msg.items()],
        "content_type": msg.get_content_type(),
        "defects": [str(d) for d in msg.defects],
        "parts": [],
    }
    for part in msg.walk():
        if part.is_multipart():
            continue
        entry = {
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            # Line ends as a reader sees them: a base64 body keeps the CRLF of the wire.
            "text": part.get_content().replace("\r\n", "\n"),
            "defects": [str(d) for d in part.defects],
        }
        if entry["content_type"] == "text/html":
            p = Html()
            p.feed(entry["text"])
            p.close()
            entry["html"] = {
                "tags": p.tags,
                "hrefs": p.hrefs,
                "langs": p.langs,
                "styles": p.styles,
            }
        out["parts"].append(entry)
    return out


def main():
    if len(sys.argv) == 2:
        json.dump(parse(sys.argv[1]), sys.stdout, ensure_ascii=False)
        return
    for path in sys.argv[1:]:
        sys.stdout.write(json.dumps(parse(path), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
