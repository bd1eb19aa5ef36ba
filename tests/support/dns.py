"""A tiny authoritative DNS server on 127.0.0.1 for tests: one name whose A records the
test changes while the stack runs, the way a Kubernetes headless Service's name follows
its ready pods. Targets reach it as `dns://127.0.0.1:PORT/NAME:PORT`."""

from __future__ import annotations

import socket
import struct
import threading

_A, _IN = 1, 1


class DnsServer:
    def __init__(self, name: str, addresses: list[str] | None = None) -> None:
        self.name = name.rstrip(".").lower()
        self._addresses = list(addresses or [])
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def set(self, addresses: list[str]) -> None:
        with self._lock:
            self._addresses = list(addresses)

    def target(self, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(2048)
            except OSError:  # closed
                return
            reply = self._answer(query)
            if reply is not None:
                self.sock.sendto(reply, client)

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 17:
            return None
        qid, _flags, qdcount = struct.unpack(">HHH", query[:6])
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        qtype, qclass = struct.unpack(">HH", query[offset + 1 : offset + 5])
        question = query[12 : offset + 5]
        known = ".".join(labels).lower() == self.name
        with self._lock:
            ips = list(self._addresses) if known and qtype == _A and qclass == _IN else []
        rcode = 0 if known else 3  # NXDOMAIN for any other name
        header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(ips), 0, 0)
        answers = b"".join(struct.pack(">HHHIH", 0xC00C, _A, _IN, 1, 4) + socket.inet_aton(ip)
                           for ip in ips)
        return header + question + answers

    def close(self) -> None:
        self.sock.close()
