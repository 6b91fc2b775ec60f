#!/usr/bin/env python3
"""Reads chute Pipe-mode FIFOs the way a training script does.

For each epoch it waits for PREFIX_EPOCH to appear, opens it, parses MXNet
RecordIO to EOF and prints one line per record: ``EPOCH INDEX LENGTH SHA256``.

RecordIO, as chute writes it: a 4-byte little-endian magic 0xced7230a, a 4-byte
little-endian word whose top 3 bits are the continuation flag (0 whole record,
1 first, 2 middle, 3 last part) and whose low 29 bits are the payload length,
the payload, then zero padding to a multiple of 4 bytes. Parts of one payload
are joined as they are.

Usage: pipe_reader.py PREFIX EPOCHS [FIRST]   (PREFIX is DIR/CHANNEL; epochs
FIRST .. EPOCHS-1, FIRST defaulting to 0)
"""

import hashlib
import os
import struct
import sys
import time

MAGIC = 0xCED7230A
LENGTH_MASK = (1 << 29) - 1


def read_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"stream ended inside a record ({len(data)} of {n} bytes)")
    return data


def records(f):
    """Yields (flag, payload) for every record until EOF."""
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) != 8:
            raise ValueError(f"truncated record header ({len(head)} bytes)")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(f"bad magic 0x{magic:08x}")
        flag, length = word >> 29, word & LENGTH_MASK
        payload = read_exact(f, length)
        pad = read_exact(f, (4 - length % 4) % 4)
        if any(pad):
            raise ValueError("non-zero padding")
        yield flag, payload


def payloads(f):
    """Yields whole payloads, joining continuation records."""
    parts = None
    for flag, payload in records(f):
        if flag == 0:
            if parts is not None:
                raise ValueError("whole record inside a split one")
            yield payload
        elif flag == 1:
            if parts is not None:
                raise ValueError("first part inside a split record")
            parts = [payload]
        elif flag in (2, 3):
            if parts is None:
                raise ValueError(f"continuation flag {flag} without a first part")
            parts.append(payload)
            if flag == 3:
                yield b"".join(parts)
                parts = None
        else:
            raise ValueError(f"bad continuation flag {flag}")
    if parts is not None:
        raise ValueError("stream ended inside a split record")


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def main():
    prefix, epochs = sys.argv[1], int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    out = sys.stdout
    for epoch in range(first, epochs):
        path = f"{prefix}_{epoch}"
        wait_for(path)
        with open(path, "rb", buffering=1 << 20) as f:
            for index, payload in enumerate(payloads(f)):
                digest = hashlib.sha256(payload).hexdigest()
                out.write(f"{epoch} {index} {len(payload)} {digest}\n")
    out.flush()


if __name__ == "__main__":
    main()
