#!/usr/bin/env python3
"""UDP-to-TLS bridge for SIP scanners that speak UDP only (SIPVicious OSS).

    udp_tls_bridge.py LISTEN_PORT TARGET_HOST TARGET_PORT SNI CA_FILE

Each datagram received on 127.0.0.1:LISTEN_PORT is sent over a new TLS connection to the
target (verified against CA_FILE, with SNI), the first SIP message read back is returned to the
datagram's sender as one datagram, and the connection is closed. One connection per request
keeps the answers matched to their requests without parsing Call-IDs, and the registrar sees
what a scanner opening connections would make it see. Runs until killed; prints "ready" once
bound.
"""

import socket
import ssl
import sys
import threading

MAX_MESSAGE = 65536


def read_message(tls):
    """One SIP message: the header section, then Content-Length bytes of body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = tls.recv(4096)
        if not chunk:
            return buf or None
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            return None
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            try:
                length = int(value.strip())
            except ValueError:
                return None
    while len(body) < length:
        chunk = tls.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body[:length]


def relay(udp, datagram, sender, target, sni, context):
    try:
        with socket.create_connection(target, timeout=5) as tcp:
            with context.wrap_socket(tcp, server_hostname=sni) as tls:
                tls.sendall(datagram)
                answer = read_message(tls)
        if answer:
            udp.sendto(answer, sender)
    except (OSError, ssl.SSLError) as error:
        print(f"bridge: {sender}: {error}", file=sys.stderr, flush=True)


def main():
    listen, host, port, sni, ca = sys.argv[1:6]
    context = ssl.create_default_context(cafile=ca)
    # The chain is verified against the lab CA; which name the certificate carries is what the
    # stunnel cases check, not what this bridge is for.
    context.check_hostname = False
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", int(listen)))
    print("ready", flush=True)
    while True:
        datagram, sender = udp.recvfrom(MAX_MESSAGE)
        threading.Thread(
            target=relay,
            args=(udp, datagram, sender, (host, int(port)), sni, context),
            daemon=True,
        ).start()


if __name__ == "__main__":
    main()
