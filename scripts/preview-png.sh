#!/usr/bin/env bash
# Renders what a digest looks like, as PNG screenshots, with headless Chromium.
#
#   scripts/preview-png.sh [OUT_DIR]        (default: target/preview)
#
# It writes a small RSS feed of its own (English, Vietnamese and Chinese headlines dated now,
# a story of both default watches, links with tracking parameters, a hostile title), polls it
# with the shipped watches into a throwaway state directory (the daemon runs until the feed is
# stored, then is stopped: nothing is claimed), renders the next digest with
# `policywatch digest --preview` and photographs the HTML at 800 and 390 px wide, in light and
# dark colour schemes:
#   OUT_DIR/digest.html, digest.txt, digest-{800,390}-{light,dark}.png
# Needs: cargo, python3, and Chromium (Debian: apt-get install -y chromium).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/preview}"
mkdir -p "$out"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

chrome="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$chrome" ]; then
    echo "no Chromium found: apt-get install -y chromium" >&2
    exit 1
fi

cargo build --quiet --manifest-path "$root/Cargo.toml"
pw="$root/target/debug/policywatch"

# The feed: our own sample stories, dated a few minutes ago so they are not backfill.
python3 - "$work/feed.xml" <<'EOF'
import sys, email.utils, time
now = time.time()
def date(mins):
    return email.utils.formatdate(now - mins * 60)
items = [
    ("Commerce adds 12 Chinese chip firms to the Entity List",
     "https://news.example/entity-list-12?utm_source=rss&utm_medium=feed",
     "The Bureau of Industry and Security added twelve companies to the Entity List, citing support for advanced computing programmes. Licence applications will be reviewed with a presumption of denial."),
    ("Nvidia H20 export licences revoked for China shipments",
     "https://news.example/h20-licences?fbclid=abc123",
     "Washington told Nvidia that sales of the H20 accelerator to China now need an export licence, a move the company said would cost it billions in orders."),
    ("Mỹ đưa thêm 12 công ty Trung Quốc vào danh sách thực thể",
     "https://vn.example/danh-sach-thuc-the",
     "Bộ Thương mại Mỹ bổ sung 12 doanh nghiệp bán dẫn Trung Quốc vào danh sách thực thể, hạn chế xuất khẩu công nghệ chip tiên tiến."),
    ("美国将12家中国芯片企业列入实体清单",
     "https://zh.example/shiti-qingdan?spm=a1.b2",
     "美国商务部工业与安全局将12家中国半导体企业列入实体清单，限制先进芯片和制造设备出口。"),
    ("Huawei ramps Ascend 910C AI chip output despite curbs",
     "https://news.example/ascend-910c",
     "Huawei is increasing production of its Ascend 910C AI accelerator as Chinese cloud providers look for alternatives to Nvidia hardware restricted by US export controls."),
    ("Netherlands tightens ASML lithography export rules",
     "https://news.example/asml-rules?ocid=x",
     "The Dutch government expanded licence requirements for ASML deep-ultraviolet lithography systems, aligning its export controls with Washington."),
    ("Curbs <script>alert('x')</script> & \"AI\" chips: what the new export rules mean",
     "https://news.example/explainer",
     "A reader's guide to the export controls on AI chips, with the <b>markup</b> a hostile feed might send."),
]
rss = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Sample Wire</title><link>https://news.example/</link><description>sample</description>']
def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
for i, (t, l, d) in enumerate(items):
    rss.append(f"<item><title>{esc(t)}</title><link>{esc(l)}</link><guid>sample-{i}</guid>"
               f"<description>{esc(d)}</description><pubDate>{date(5 + i * 7)}</pubDate></item>")
rss.append("</channel></rss>")
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(rss))
EOF

# The shipped config's watches, with this feed and one digest that is not due.
python3 - "$root/config/policywatch.toml" "$work/feed.xml" "$work/config.toml" <<'EOF'
import sys
shipped = open(sys.argv[1], encoding="utf-8").read()
watches = shipped[shipped.index("[[watches]]"):]
head = f'''[daemon]
poll_interval = "1h"

[[feeds]]
url = "file://{sys.argv[2]}"
name = "Sample Wire"

[[digests]]
id = "preview"
title = "Export-control brief"
schedule = "weekly mon 09:00"
timezone = "Europe/Berlin"
via = "log"
contact = "Trade desk <trade-desk@example.org>"

'''
open(sys.argv[3], "w", encoding="utf-8").write(head + watches)
EOF

# Poll until the feed is stored, then stop the daemon (SIGTERM): the stories stay unclaimed.
"$pw" run --config "$work/config.toml" --state-dir "$work/state" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
    if "$pw" feeds --config "$work/config.toml" --state-dir "$work/state" 2>/dev/null \
        | grep -q "Sample Wire.*ok"; then
        break
    fi
    sleep 0.2
done
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=""

"$pw" digest --preview preview --config "$work/config.toml" --state-dir "$work/state" \
    --html "$out/digest.html" >"$out/digest.txt"

for width in 800 390; do
    for scheme in light dark; do
        png="$out/digest-$width-$scheme.png"
        "$chrome" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
            --force-device-scale-factor=1 \
            --blink-settings=preferredColorScheme=$([ "$scheme" = dark ] && echo 0 || echo 1) \
            $([ "$scheme" = dark ] && echo --force-dark-mode) \
            --window-size="$width,2400" --screenshot="$png" "file://$out/digest.html" \
            >/dev/null 2>&1
        echo "$png"
    done
done
