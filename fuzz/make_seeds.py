#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets (re-run to regenerate; deterministic).

packet_ingress: real IPv4 packets from a client 169.254.169.253 to 169.254.169.254, in the
target's input format: a sequence of [flags, len_hi, len_lo, packet bytes...]. Flag bit 0 asks
the target to repair the checksums (set on every TCP packet here, so mutations stay valid);
bit 1 advances its clock by a second. The server's initial sequence number is not known here,
so the ACKs use a guess; libFuzzer's comparison tracing finds the real one.

http_request: raw client bytes for one connection (v1 GET, token PUT, GET with a token, HEAD,
pipelined, chunked, a huge header, ...).
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = bytes([169, 254, 169, 253])
SERVER = bytes([169, 254, 169, 254])


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(protocol: int, payload: bytes, frag: int = 0, ident: int = 1) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, protocol, 0, CLIENT, SERVER
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32


def tcp(flags: int, seq: int, ack: int = 0, data: bytes = b"", sport: int = 40000,
        dport: int = 80, options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    segment = struct.pack(
        "!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, 64240, 0, 0
    ) + options + data
    pseudo = CLIENT + SERVER + struct.pack("!BBH", 0, 6, len(segment))
    segment = segment[:16] + struct.pack("!H", checksum(pseudo + segment)) + segment[18:]
    return ipv4(6, segment)


SYN_OPTIONS = (
    b"\x02\x04\x05\xb4"  # MSS 1460
    b"\x04\x02"  # SACK permitted
    b"\x08\x0a\x00\x00\x10\x00\x00\x00\x00\x00"  # timestamps
    b"\x01"  # NOP
    b"\x03\x03\x07"  # window scale 7
)
REQUEST = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
ISN = 1000
SERVER_ISN_GUESS = 0


def frame(packet: bytes, repair: bool = True, tick: bool = False) -> bytes:
    flags = (1 if repair else 0) | (2 if tick else 0)
    return bytes([flags]) + struct.pack("!H", len(packet)) + packet


def icmp_echo(data: bytes = b"imds-tun-ping") -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + data
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(1, body)


def udp(dport: int, data: bytes) -> bytes:
    body = struct.pack("!HHHH", 40001, dport, 8 + len(data), 0) + data
    return ipv4(17, body)


syn = tcp(SYN, ISN, options=SYN_OPTIONS)
handshake_ack = tcp(ACK, ISN + 1, SERVER_ISN_GUESS + 1)
data = tcp(ACK | PSH, ISN + 1, SERVER_ISN_GUESS + 1, REQUEST)
fin = tcp(ACK | FIN, ISN + 1 + len(REQUEST), SERVER_ISN_GUESS + 1)
rst = tcp(RST, ISN + 1)

PACKET_SEEDS = {
    "syn": frame(syn),
    "syn-plain": frame(tcp(SYN, ISN)),
    "handshake": frame(syn) + frame(handshake_ack),
    "request": frame(syn) + frame(handshake_ack) + frame(data),
    "request-fin": frame(syn) + frame(handshake_ack) + frame(data) + frame(fin),
    "request-rst": frame(syn) + frame(handshake_ack) + frame(data) + frame(rst),
    "syn-then-time": frame(syn) + frame(handshake_ack, tick=True) + frame(data, tick=True),
    "syn-data-fin": frame(tcp(SYN, ISN)) + frame(tcp(FIN | ACK | PSH, ISN + 1, 1, REQUEST)),
    "fin": frame(fin),
    "rst": frame(rst),
    "xmas": frame(tcp(0xFF, ISN, 1)),
    "null-flags": frame(tcp(0, ISN)),
    "syn-fin": frame(tcp(SYN | FIN, ISN)),
    "other-port": frame(tcp(SYN, ISN, dport=22)),
    "bad-checksum": frame(tcp(SYN, ISN)[:-2] + b"\xde\xad", repair=False),
    "icmp-echo": frame(icmp_echo()),
    "icmp-echo-large": frame(icmp_echo(bytes(range(256)) * 5)),
    "udp": frame(udp(53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")),
    "fragment": frame(ipv4(6, tcp(SYN, ISN)[20:28], frag=0x2000)) + frame(
        ipv4(6, tcp(SYN, ISN)[28:], frag=1)
    ),
    "many-clients": b"".join(frame(tcp(SYN, ISN, sport=40000 + i)) for i in range(12)),
}

HOST = b"Host: 169.254.169.254\r\n"
HTTP_SEEDS = {
    "v1-get": b"GET /latest/meta-data/instance-id HTTP/1.1\r\n" + HOST + b"\r\n",
    "v1-listing": b"GET /latest/meta-data/ HTTP/1.1\r\n" + HOST + b"Accept: */*\r\n\r\n",
    "http10": b"GET /latest/meta-data/placement/availability-zone HTTP/1.0\r\n\r\n",
    "token-put": b"PUT /latest/api/token HTTP/1.1\r\n" + HOST
    + b"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
    "get-with-token": b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n" + HOST
    + b"X-aws-ec2-metadata-token: AAAAAGsEhdnWKHm_Jx9yAriUokqs3DMFcjS3nuqYpYMMThZ2oMeXlA\r\n\r\n",
    "head": b"HEAD /latest/dynamic/instance-identity/document HTTP/1.1\r\n" + HOST + b"\r\n",
    "pipelined": (b"GET /latest/meta-data/instance-id HTTP/1.1\r\n" + HOST + b"\r\n") * 2
    + b"GET /latest/user-data HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
    "chunked": b"PUT /latest/api/token HTTP/1.1\r\n" + HOST
    + b"X-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"5\r\nhello\r\n0\r\n\r\n",
    "huge-header": b"GET /latest/meta-data/ HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 20000
    + b"\r\n\r\n",
    "foreign-host": b"GET /latest/meta-data/ HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
    "forwarded-token": b"PUT /latest/api/token HTTP/1.1\r\n" + HOST
    + b"X-Forwarded-For: 10.0.0.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    "smuggle-cl-te": b"PUT /latest/api/token HTTP/1.1\r\n" + HOST
    + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    "dated-credentials": b"GET /2021-03-23/meta-data/iam/security-credentials/imds-tun HTTP/1.1\r\n"
    + HOST + b"\r\n",
    "gce-recursive": b"GET /computeMetadata/v1/instance/?recursive=true&alt=text HTTP/1.1\r\n"
    + HOST + b"Metadata-Flavor: Google\r\n\r\n",
    "gce-token": b"GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b HTTP/1.1\r\n"
    + HOST + b"Metadata-Flavor: Google\r\n\r\n",
    "gce-identity": b"GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fx&format=full HTTP/1.1\r\n"
    + HOST + b"Metadata-Flavor: Google\r\n\r\n",
    "gce-wait": b"GET /computeMetadata/v1/project/project-id?wait_for_change=true&timeout_sec=3 HTTP/1.1\r\n"
    + HOST + b"Metadata-Flavor: Google\r\n\r\n",
    "azure-instance": b"GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\r\n"
    + HOST + b"Metadata: true\r\n\r\n",
    "azure-token": b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F HTTP/1.1\r\n"
    + HOST + b"Metadata: true\r\n\r\n",
}


def write(directory: str, seeds: dict) -> None:
    path = os.path.join(HERE, "corpus", directory)
    os.makedirs(path, exist_ok=True)
    for name, content in seeds.items():
        with open(os.path.join(path, "seed-" + name), "wb") as file:
            file.write(content)


write("packet_ingress", PACKET_SEEDS)
write("http_request", HTTP_SEEDS)
