"""Profile kafkaw under a librdkafka load with py-spy; print where the time goes.

    python bench/profile_broker.py produce [--acks 1] [--size 100] [--partitions 1] [-n 2000000]
    python bench/profile_broker.py consume [--size 100] [--partitions 1] [-n 2000000]
    python bench/profile_broker.py produce|consume --modern     # librdkafka defaults: Produce v7 / Fetch v11
    python bench/profile_broker.py consume --down-convert       # v2 data read by Fetch v0 (down-converted)

Starts kafkaw on LevelDB (temporary data dir, free port), attaches
`py-spy record` (collapsed stacks, all threads) for the duration of the load,
then prints the top functions by own ("self") and inclusive samples, per
thread. By default librdkafka is pinned to Kafka 0.8.0 (Produce/Fetch v0);
--modern uses its defaults (v2 record batches; consumers with the modern rows'
queued.min.messages), and --down-convert produces with its defaults, then
consumes pinned to 0.8.0 (kafkaw converts each v2 batch to magic-0 messages).
The raw stacks are kept (load them into https://speedscope.app or
flamegraph.pl). For `consume`, the messages are produced first, unprofiled.
Needs `pip install py-spy`; run as a user allowed to ptrace the broker.
"""

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame, withLine):
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("/kafkaw/", "site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/kafkaw/" else "kafkaw/" + path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path}{':' + m['line'] if withLine and m['line'] else ''})"


def analyse(rawPath, top, withLine):
    selfCounts = collections.Counter()
    inclusive = collections.Counter()
    threads = collections.Counter()
    total = 0
    for line in open(rawPath):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # a line py-spy cut short (a nonblocking sample of a changing stack)
        count = int(count)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        total += count
        threads[thread] += count
        selfCounts[short(frames[-1], withLine)] += count
        for name in {short(f, False) for f in frames}:
            inclusive[name] += count
    out = [f"{total} samples"]
    out.append("\nby thread:")
    for name, c in threads.most_common():
        out.append(f"  {100 * c / total:5.1f}%  {name}")
    out.append(f"\ntop {top} by own time (leaf frame):")
    for name, c in selfCounts.most_common(top):
        out.append(f"  {100 * c / total:5.1f}%  {name}")
    out.append(f"\ntop {top} inclusive:")
    for name, c in inclusive.most_common(top):
        out.append(f"  {100 * c / total:5.1f}%  {name}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("load", choices=["produce", "consume"])
    ap.add_argument("--acks", type=int, default=1)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("-n", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too; slower)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--lines", action="store_true", help="own time per line, not per function")
    ap.add_argument("--out", help="directory for the raw stacks (default: a temporary one)")
    ap.add_argument("--storage", default="leveldb")
    ap.add_argument("--payload", choices=["random", "x"], default="random")
    ap.add_argument("--tree", help="kafkaw source tree to profile (default: this checkout)")
    ap.add_argument("--modern", action="store_true",
                    help="librdkafka's default settings (Produce v7 with v2 batches, Fetch v11), not pinned to 0.8.0")
    ap.add_argument("--down-convert", action="store_true",
                    help="consume: produce v2 batches (librdkafka defaults), consume with Fetch v0 (pinned to 0.8.0)")
    args = ap.parse_args()
    if args.tree:
        run.ROOT = Path(args.tree).resolve()

    work = Path(tempfile.mkdtemp(prefix="kafkaw-profile-data-"))  # removed at the end
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kafkaw-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    proto = "-v2tov0" if args.down_convert else "-modern" if args.modern else ""
    raw = out / f"{args.load}{proto}-a{args.acks}-{args.size}B-p{args.partitions}.txt"
    produceModern = args.modern or args.down_convert
    consumeModern = args.modern and not args.down_convert
    consumeExtra = run.MODERN_CONSUMER if produceModern else None
    run.PAYLOAD = args.payload
    broker = run.startKafkaw(work, args.partitions, storage=args.storage)
    topic = "profile"
    try:
        if args.load == "consume":
            run.produceLoad(broker.bootstrap, topic, args.partitions, args.n - args.partitions, args.size, 1,
                            modern=produceModern)
        command = ["py-spy", "record", "--pid", str(broker.pid), "--rate", str(args.rate), "--format", "raw",
                   "--output", str(raw), "--threads"]
        # py-spy refuses --native with --nonblocking (it must pause the broker to unwind C stacks)
        command.append("--native" if args.native else "--nonblocking")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        cpu0 = broker.cpu()
        t0 = time.perf_counter()
        if args.load == "produce":
            run.produceLoad(broker.bootstrap, topic, args.partitions, args.n, args.size, args.acks,
                            waitForLogEnd=broker.port if args.acks == 0 else None, modern=produceModern)
            count = args.n
        else:
            _, count, _ = run.consumeLoad(broker.bootstrap, topic, args.partitions, args.n, modern=consumeModern,
                                          extra=consumeExtra)
        dt = time.perf_counter() - t0
        cpu = broker.cpu() - cpu0
        spy.send_signal(signal.SIGINT)
        _, spyErrors = spy.communicate(timeout=60)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    protocol = ("v2 batches read by Fetch v0 (down-converted)" if args.down_convert
                else "librdkafka defaults (v2 batches)" if args.modern else "librdkafka pinned to 0.8.0 (v0)")
    print(f"{args.load}, {protocol}, acks={args.acks} {args.size} B x{args.partitions} partitions: {count:,} messages in {dt:.2f} s "
          f"({count / dt:,.0f} msg/s under py-spy), broker CPU {cpu * 1e6 / count:.2f} µs/msg")
    if not raw.exists():
        sys.exit(f"py-spy wrote no stacks (exit {spy.returncode}):\n{spyErrors.decode(errors='replace')[-2000:]}")
    print(f"raw stacks: {raw}")
    print(analyse(raw, args.top, args.lines))


if __name__ == "__main__":
    main()
