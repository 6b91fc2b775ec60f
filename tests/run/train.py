#!/usr/bin/env python3
"""A stand-in training script for tests/run.rs: run by `chute run`, it checks what a
SageMaker training script relies on and exits with the code it is told to.

Usage: train.py EXPECT.json EXIT_CODE        check everything, then exit EXIT_CODE
       train.py EXPECT.json wait MARKER      check everything, write MARKER "ready",
                                             then wait for SIGTERM/SIGINT; on one,
                                             append its name to MARKER and exit 42

EXPECT.json (written by the test) holds:
  env:      every SM_* variable, exactly as it must be set (no others may exist)
  configs:  {file name under SM_INPUT_CONFIG_DIR: its expected JSON value}
  channels: {name: {"kind": "dir", "files": {relative path: sha256}, "mount": bool}
             | {"kind": "pipe", "records": [sha256, ...] in key order,
                "seed": int or null, "epochs": N}}

Any mismatch prints what differs and exits 99, a code the tests never expect.
Pipe channels are read as RecordIO (MXNet framing) and their record order is
checked against chute's documented shuffle (SplitMix64 + Fisher-Yates,
crates/chute-plan/src/shuffle.rs), implemented here independently.
"""

import errno
import hashlib
import json
import os
import signal
import struct
import sys
import time

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
RECORDIO_MAGIC = 0xCED7230A


def fail(msg):
    print(f"train.py: CHECK FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(99)


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def permutation(n, seed, epoch):
    state = mix((seed ^ (epoch * GOLDEN)) & MASK)

    def next_u64():
        nonlocal state
        state = (state + GOLDEN) & MASK
        return mix(state)

    def bounded(k):
        m = next_u64() * k
        lo = m & MASK
        if lo < k:
            t = ((1 << 64) - k) % k
            while lo < t:
                m = next_u64() * k
                lo = m & MASK
        return m >> 64

    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = bounded(i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def check_env(expected):
    actual = {k: v for k, v in os.environ.items() if k.startswith("SM_")}
    for k, v in expected.items():
        if actual.get(k) != v:
            fail(f"{k}: expected {v!r}, got {actual.get(k)!r}")
    # The rest of the toolkit's variables (checked against the toolkit itself in
    # tests/run_env.rs); anything else would be a stray.
    toolkit = {
        "SM_CURRENT_INSTANCE_GROUP", "SM_CURRENT_INSTANCE_GROUP_HOSTS",
        "SM_CURRENT_INSTANCE_TYPE", "SM_DISTRIBUTION_INSTANCE_GROUPS",
        "SM_FRAMEWORK_MODULE", "SM_FRAMEWORK_PARAMS", "SM_HPS", "SM_INSTANCE_GROUPS",
        "SM_INSTANCE_GROUPS_DICT", "SM_IS_HETERO", "SM_LOG_LEVEL", "SM_MODEL_DIR",
        "SM_MODULE_DIR", "SM_MODULE_NAME", "SM_NETWORK_INTERFACE_NAME", "SM_NUM_CPUS",
        "SM_NUM_GPUS", "SM_NUM_NEURONS", "SM_OUTPUT_DATA_DIR", "SM_OUTPUT_DIR",
        "SM_OUTPUT_INTERMEDIATE_DIR", "SM_RESOURCE_CONFIG", "SM_TRAINING_ENV",
        "SM_USER_ARGS", "SM_USER_ENTRY_POINT",
    }
    extra = sorted(set(actual) - set(expected) - toolkit)
    if extra:
        fail(f"unexpected SM_* variables: {extra}")


def check_configs(expected):
    config_dir = os.environ["SM_INPUT_CONFIG_DIR"]
    for name, want in expected.items():
        with open(os.path.join(config_dir, name)) as f:
            got = json.load(f)
        if got != want:
            fail(f"{name}: expected {want}, got {got}")


def check_dir(name, spec):
    root = os.environ["SM_CHANNEL_" + name.upper()]
    got = {}
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            path = os.path.join(dirpath, fname)
            got[os.path.relpath(path, root)] = sha256_file(path)
    if got != spec["files"]:
        missing = sorted(set(spec["files"]) - set(got))
        extra = sorted(set(got) - set(spec["files"]))
        wrong = sorted(k for k in got if k in spec["files"] and got[k] != spec["files"][k])
        fail(f"channel {name}: missing {missing}, extra {extra}, bytes differ {wrong}")
    if spec.get("mount"):
        if not os.path.ismount(root):
            fail(f"channel {name}: {root} is not a mount point")
        # FastFile is read-only: the first write must fail with EROFS.
        try:
            with open(os.path.join(root, "new-file"), "wb"):
                pass
            fail(f"channel {name}: creating a file on the mount succeeded")
        except OSError as e:
            if e.errno != errno.EROFS:
                fail(f"channel {name}: create failed with {e}, expected EROFS")


def read_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_recordio(path):
    """Whole records of a RecordIO stream, reassembling split records."""
    records = []
    current = None
    with open(path, "rb") as f:
        while True:
            head = read_exact(f, 8)
            if head is None:
                break
            magic, lrec = struct.unpack("<II", head)
            if magic != RECORDIO_MAGIC:
                fail(f"{path}: bad RecordIO magic {magic:#x} after {len(records)} records")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            data = read_exact(f, length) if length else b""
            if data is None:
                fail(f"{path}: record cut short")
            pad = (4 - length % 4) % 4
            if pad and read_exact(f, pad) is None:
                fail(f"{path}: padding cut short")
            if cflag == 0:
                records.append(data)
            elif cflag == 1:
                current = data
            elif cflag == 2:
                current += data
            else:
                records.append(current + data)
                current = None
    return records


def check_pipe(name, spec):
    data_dir = os.path.dirname(os.environ["SM_CHANNEL_" + name.upper()])
    base = spec["records"]
    for epoch in range(spec["epochs"]):
        path = os.path.join(data_dir, f"{name}_{epoch}")
        deadline = time.time() + 30
        while not os.path.exists(path):
            if time.time() > deadline:
                fail(f"{path} never appeared")
            time.sleep(0.01)
        got = [hashlib.sha256(r).hexdigest() for r in read_recordio(path)]
        if spec["seed"] is None:
            want = base
        else:
            want = [base[i] for i in permutation(len(base), spec["seed"], epoch)]
        if got != want:
            fail(f"{path}: records differ: expected {want}, got {got}")


def main():
    expect_path, mode = sys.argv[1], sys.argv[2]
    with open(expect_path) as f:
        expect = json.load(f)
    check_env(expect["env"])
    check_configs(expect["configs"])
    for name, spec in sorted(expect["channels"].items()):
        if spec["kind"] == "dir":
            check_dir(name, spec)
        else:
            check_pipe(name, spec)
    if mode != "wait":
        print("train.py: every check passed", flush=True)
        sys.exit(int(mode))

    marker = sys.argv[3]

    def on_signal(signo, _frame):
        with open(marker, "a") as f:
            f.write(signal.Signals(signo).name + "\n")
        sys.exit(42)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(marker, "w") as f:
        f.write("ready\n")
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
