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

       pipe_reader.py --splice|--tee PREFIX EPOCHS
  reads each epoch's raw bytes the way ``pv`` and other zero-copy tools do and
  prints ``EPOCH LENGTH SHA256`` per epoch. ``--splice`` moves the FIFO's pages
  into a pipe of its own with splice(2); ``--tee`` duplicates them into one
  with tee(2) and then consumes them from the FIFO. Either way the bytes are
  read from the second pipe by a thread that lags behind, so they stay
  referenced there well after they have left the FIFO: a writer that reuses
  its memory once the FIFO is drained would show up as wrong bytes here.
"""

import ctypes
import fcntl
import hashlib
import os
import struct
import sys
import threading
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


F_SETPIPE_SZ = 1031
CHUNK = 64 << 10


def lagging_reader(fd, out):
    """Reads fd to EOF slowly, so that what it has not read yet stays in the pipe."""
    h = hashlib.sha256()
    total = 0
    while True:
        time.sleep(0.002)
        data = os.read(fd, CHUNK)
        if not data:
            break
        h.update(data)
        total += len(data)
    out.append((total, h.hexdigest()))


def tee(fd_in, fd_out, n):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.tee.restype = ctypes.c_ssize_t
    libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    got = libc.tee(fd_in, fd_out, n, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"tee: {os.strerror(err)}")
    return got


def zero_copy_epoch(path, how):
    """One epoch moved by reference into a pipe of our own, read from there."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    result = []
    reader = threading.Thread(target=lagging_reader, args=(r, result))
    reader.start()
    fifo = os.open(path, os.O_RDONLY)
    try:
        while True:
            if how == "splice":
                n = os.splice(fifo, w, CHUNK)
            else:
                n = tee(fifo, w, CHUNK)
                # tee(2) leaves the bytes in the FIFO: consume them there, as pv does.
                left = n
                while left:
                    left -= len(os.read(fifo, left))
            if n == 0:
                break
    finally:
        os.close(fifo)
        os.close(w)
    reader.join()
    os.close(r)
    return result[0]


def main():
    if sys.argv[1] in ("--splice", "--tee"):
        how = sys.argv[1][2:]
        prefix, epochs = sys.argv[2], int(sys.argv[3])
        for epoch in range(epochs):
            path = f"{prefix}_{epoch}"
            wait_for(path)
            total, digest = zero_copy_epoch(path, how)
            print(f"{epoch} {total} {digest}", flush=True)
        return
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
