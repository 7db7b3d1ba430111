#!/usr/bin/env python3
"""Checks the RFC 4475 archive files against the messages printed in the RFC body.

usage: verify.py rfc4475.txt DIR

For each "Message Details : NAME" section, the printed message is rebuilt by the RFC's own
conventions (section 2: <allOneLine>, <hex>, <repeat>), the page footer/header lines that
split a message across pages are removed, and the result is joined with CRLF and compared
with DIR/NAME.dat. Trailing blank lines are not printed distinguishably, so both sides are
compared without them; a message that crosses a page break is also compared line by line
without its blank lines, and reported as such.
"""
import re
import sys

def page_clean(lines):
    """Drops the footer, the form feed + running header, and the page's padding lines."""
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^Sparks, et al\.\s+Informational\s+\[Page \d+\]$", line):
            # Padding before the footer is blank lines we cannot tell from message lines.
            while out and out[-1] == "":
                out.pop()
            out.append("\x00PAGEBREAK")
            i += 1
            if i < len(lines) and lines[i] == "\f":
                i += 1
            if i < len(lines) and lines[i].lstrip("\f").startswith("RFC 4475 "):
                i += 1
            while i < len(lines) and lines[i] == "":
                i += 1
            continue
        out.append(line)
        i += 1
    return out

def expand(text):
    text = re.sub(r"<allOneLine>\n(.*?)\n</allOneLine>",
                  lambda m: m.group(1).replace("\n", ""), text, flags=re.S)
    text = re.sub(r"<repeat count=(\d+)>(.*?)</repeat>",
                  lambda m: m.group(2) * int(m.group(1)), text, flags=re.S)
    return text

def to_bytes(text):
    out = bytearray()
    pos = 0
    for m in re.finditer(r"<hex>([0-9A-Fa-f\s]*)</hex>", text, flags=re.S):
        out += text[pos:m.start()].replace("\n", "\r\n").encode()
        out += bytes.fromhex("".join(m.group(1).split()))
        pos = m.end()
    out += text[pos:].replace("\n", "\r\n").encode()
    return bytes(out)

# The one place the archive and the printed text disagree: a typo in the archive's Via host.
# The archive is what the RFC calls bit-exact, so its bytes are kept as they are.
KNOWN = {"trws": (b"host1.examle.com", b"host1.example.com")}

def main():
    rfc, root = sys.argv[1], sys.argv[2]
    lines = page_clean(open(rfc, encoding="ascii").read().split("\n"))
    names = []
    bad = 0
    for idx, line in enumerate(lines):
        m = re.match(r"^      Message Details : (\S+)$", line)
        if not m:
            continue
        name = m.group(1)
        names.append(name)
        body = []
        crossed = False
        j = idx + 1
        while j < len(lines) and lines[j] == "":
            j += 1
        while j < len(lines):
            l = lines[j]
            if l == "\x00PAGEBREAK":
                crossed = True
            elif l == "" or l.startswith("      "):
                body.append(l[6:])
            else:
                break
            j += 1
        while body and body[-1] == "":
            body.pop()
        # The hex/repeat/allOneLine markup may span lines; expand on the joined text.
        printed = to_bytes(expand("\n".join(body)))
        data = open(f"{root}/{name}.dat", "rb").read()
        ref = data.rstrip(b"\r\n")
        mine = printed.rstrip(b"\r\n")
        known = KNOWN.get(name)
        if ref == mine:
            verdict = "exact"
        elif known and ref.replace(*known) == mine:
            verdict = f"exact but for the archive's {known[0].decode()!r} (body: {known[1].decode()!r})"
        elif crossed and [x for x in ref.split(b"\r\n") if x] == [x for x in mine.split(b"\r\n") if x]:
            verdict = "exact modulo blank lines at a page break"
        else:
            verdict = "DIFFERS"
            bad += 1
        print(f"{name:12} {len(data):5} bytes  {verdict}")
        if verdict == "DIFFERS":
            import difflib
            for d in difflib.unified_diff(ref.decode("latin-1").split("\r\n"),
                                          mine.decode("latin-1").split("\r\n"), "archive", "body", lineterm="", n=1):
                print("    " + repr(d))
    print(f"{len(names)} messages in the body, {bad} differ")
    sys.exit(1 if bad else 0)

main()
