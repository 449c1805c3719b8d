"""Crash soak: kill -9 (and SIGTERM) a loaded kafkaw over and over; lose nothing acknowledged.

    python bench/soak.py [--cycles 24] [--partitions 4] [--seed N] [--sync]

Each cycle starts `twistd kafkaw` on the same LevelDB data dir, lets a
confluent-kafka producer (acks=1, no retries, Kafka 0.8 settings) write
numbered messages of varied sizes to every partition — uncompressed, gzip or
snappy by turns — and stops the broker at a random moment while requests are in
flight: SIGKILL, or SIGTERM every --sigterm-every cycles (which must exit 0).
Then a consumer reads every partition from offset 0 and checks that:

- offsets run 0..high-1 in every partition: no hole, no duplicate;
- every acknowledged message is there, at the offset its ack named, byte for byte;
- no message is stored twice, and nothing is stored that was not sent;
- a last SIGTERM and restart keep every partition's log end.

It prints a summary (cycles, messages sent / acked / found, unacked but
present, peak RSS of the broker over all cycles) and exits 1 on any failure,
including an error logged by the broker.
Not part of the test run: the default takes 3-5 minutes.
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from run import freePort, log  # bench/run.py, beside this script

# The kafkaw tree under test: this checkout, or --tree / $KAFKAW_TREE (e.g. `git archive` of a commit).
ROOT = Path(os.environ.get("KAFKAW_TREE") or Path(__file__).resolve().parent.parent).resolve()
TOPIC = "soak"
RDKAFKA_08 = {"api.version.request": False, "broker.version.fallback": "0.8.0", "log_level": 2}  # not the refused connects to a stopped broker
CODECS = ["none", "gzip", "snappy"]
# Message n's value is b"<n>:" + a slice of FILLER: 10-400 bytes, every 1000th 50 KB; checkable byte for byte.
FILLER = random.Random(0).randbytes(52000)


def value(n):
    size = 50000 if n % 1000 == 999 else 10 + (n * 7919) % 390
    return b"%d:" % n + FILLER[n % 1000 : n % 1000 + size]


class Broker:
    """`twistd -n kafkaw` on one data dir and port, started again after each stop."""

    def __init__(self, workDir, partitions, extraArgs):
        self.workDir = workDir
        self.port = freePort()
        self.command = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "kafkaw",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--no-websocket",
            "--data-dir", str(workDir / "data"), "--num-partitions", str(partitions), *extraArgs,
        ]
        self.logPath = workDir / "broker.log"
        self.process = None
        self.peakRssKb = self.lastRssKb = self.peakAnonKb = self.lastAnonKb = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.logPath, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workDir)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.process.returncode}; see {self.logPath}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the broker does not listen on {self.port}")
                time.sleep(0.05)

    def sampleRss(self):
        """Note this process's peak RSS and its anonymous RSS now (kB), and the peaks over all processes.

        RSS includes the pages of LevelDB's table files that it has mapped
        and read (RssFile), which grow with the data read; RssAnon is the
        broker's own memory.
        """
        with open(f"/proc/{self.process.pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        self.lastRssKb = int(fields["VmHWM"].split()[0])
        self.lastAnonKb = int(fields["RssAnon"].split()[0])
        self.peakRssKb = max(self.peakRssKb, self.lastRssKb)
        self.peakAnonKb = max(self.peakAnonKb, self.lastAnonKb)

    def stop(self, sig):
        """Send C{sig}; return (exit code, seconds to exit)."""
        self.sampleRss()
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return code, time.monotonic() - started


def produceUntilStopped(broker, cycle, sig, window, partitions, state):
    """Produce until the broker gets C{sig} after C{window} seconds; record what was acked."""
    producer = Producer(
        {
            **RDKAFKA_08,
            "bootstrap.servers": broker.bootstrap,
            "acks": 1,
            "linger.ms": 2,
            # No retries: a retried send that was stored but not acked would be
            # stored twice, and copies are counted.
            "message.send.max.retries": 0,
            "message.timeout.ms": 5000,
            "compression.codec": CODECS[cycle % len(CODECS)],
        }
    )
    acked, failed = state["acked"], collections.Counter()

    def delivered(err, msg):
        if err is None:
            acked[msg.partition()].append(msg.offset() << 32 | int(msg.value().split(b":", 1)[0]))
        else:
            failed[err.name()] += 1

    stopAt = time.monotonic() + window
    sampleAt = 0
    while time.monotonic() < stopAt:
        if time.monotonic() > sampleAt:
            broker.sampleRss()
            sampleAt = time.monotonic() + 0.25
        for _ in range(100):
            n = state["sent"]
            try:
                producer.produce(TOPIC, value(n), key=b"c%d" % cycle, partition=n % partitions, on_delivery=delivered)
            except BufferError:
                break
            state["sent"] += 1
        producer.poll(0.002)
    code, seconds = broker.stop(sig)
    producer.flush(15)
    return code, seconds, failed


def readAndCheck(bootstrap, partitions, acked, sent):
    """Read every partition from offset 0, checking as it goes (the data may not fit in memory).

    C{acked}: {partition: array of offset << 32 | message number}. Returns
    (problems, {found, ackedPresent, unackedPresent, lost}, {partition: log end}).
    """
    problems = []
    counts = dict(found=0, ackedPresent=0, unackedPresent=0, lost=0)
    ends = {}
    seen = bytearray(sent)
    consumer = Consumer({**RDKAFKA_08, "bootstrap.servers": bootstrap, "group.id": "soak", "enable.auto.commit": False})
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            ends[partition] = high
            if low != 0:
                problems.append(f"partition {partition}: log starts at {low}")
            acks = sorted(acked[partition])
            nextAck = 0
            expected = 0
            consumer.assign([TopicPartition(TOPIC, partition, 0)])
            deadline = time.monotonic() + 600
            while expected < high and time.monotonic() < deadline:
                for message in consumer.consume(10000, 1.0):
                    if message.error() is not None:
                        continue
                    offset, key, data = message.offset(), message.key(), message.value()
                    if offset != expected:
                        problems.append(f"partition {partition}: offset {offset} where {expected} was expected (a hole or a duplicate)")
                        expected = offset
                    expected += 1
                    counts["found"] += 1
                    n = int(data.split(b":", 1)[0])
                    if n >= sent or n % partitions != partition or data != value(n) or not key.startswith(b"c"):
                        problems.append(f"partition {partition} offset {offset}: a message that was not sent this way: {data[:40]!r}")
                        continue
                    if seen[n]:
                        problems.append(f"partition {partition} offset {offset}: message {n} is stored twice")
                    seen[n] = 1
                    while nextAck < len(acks) and acks[nextAck] >> 32 < offset:
                        counts["lost"] += 1
                        problems.append(f"partition {partition}: acked message {acks[nextAck] & 0xFFFFFFFF} at offset {acks[nextAck] >> 32} is missing")
                        nextAck += 1
                    if nextAck < len(acks) and acks[nextAck] >> 32 == offset:
                        if acks[nextAck] & 0xFFFFFFFF == n:
                            counts["ackedPresent"] += 1
                        else:
                            counts["lost"] += 1
                            problems.append(f"partition {partition} offset {offset}: holds message {n}, acked for {acks[nextAck] & 0xFFFFFFFF}")
                        nextAck += 1
                    else:
                        counts["unackedPresent"] += 1
            if expected != high:
                problems.append(f"partition {partition}: read up to offset {expected}, log end {high}")
            for ack in acks[nextAck:]:
                counts["lost"] += 1
                problems.append(f"partition {partition}: acked message {ack & 0xFFFFFFFF} at offset {ack >> 32} is beyond the log end")
    finally:
        consumer.close()
    return problems, counts, ends


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=24)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--sigterm-every", type=int, default=4, help="every Nth cycle ends with SIGTERM instead of SIGKILL")
    parser.add_argument("--min-window", type=float, default=1.0, help="shortest time to produce before the stop (s)")
    parser.add_argument("--max-window", type=float, default=6.0, help="longest time to produce before the stop (s)")
    parser.add_argument("--sync", action="store_true", help="run the broker with --sync")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and broker log")
    parser.add_argument("--tree", type=Path, help="the kafkaw tree to run (default: this checkout)")
    args = parser.parse_args()
    if args.tree:
        global ROOT
        ROOT = args.tree.resolve()

    rng = random.Random(args.seed)
    workDir = Path(tempfile.mkdtemp(prefix="kafkaw-soak-"))
    broker = Broker(workDir, args.partitions, ["--sync"] if args.sync else [])
    state = {"sent": 0, "acked": {p: array("q") for p in range(args.partitions)}}
    sigterms = []
    failedDeliveries = collections.Counter()  # error name -> messages
    began = time.monotonic()
    log(f"soak: {args.cycles} cycles, {args.partitions} partitions, seed {args.seed}, kafkaw from {ROOT}, data in {workDir}")
    try:
        for cycle in range(args.cycles):
            sig = signal.SIGTERM if (cycle + 1) % args.sigterm_every == 0 else signal.SIGKILL
            broker.start()
            window = rng.uniform(args.min_window, args.max_window)
            ackedBefore = sum(map(len, state["acked"].values()))
            code, seconds, failed = produceUntilStopped(broker, cycle, sig, window, args.partitions, state)
            failedDeliveries.update(failed)
            ackedNow = sum(map(len, state["acked"].values()))
            if sig == signal.SIGTERM:
                sigterms.append((code, seconds))
            log(
                f"cycle {cycle + 1:2d}: {sig.name:7s} after {window:.1f} s ({CODECS[cycle % len(CODECS)]}): "
                f"{ackedNow - ackedBefore:,} acked, {sum(failed.values()):,} not {dict(failed)}; exit {code} in {seconds:.2f} s; "
                f"RSS peak {broker.lastRssKb / 1024:.0f} MB, anonymous {broker.lastAnonKb / 1024:.0f} MB"
            )
        broker.start()
        log("reading everything back")
        problems, counts, ends = readAndCheck(broker.bootstrap, args.partitions, state["acked"], state["sent"])
        # A clean stop and restart must keep every log end.
        code, seconds = broker.stop(signal.SIGTERM)
        sigterms.append((code, seconds))
        log(
            f"read back {counts['found']:,} messages; that broker's RSS peak {broker.lastRssKb / 1024:.0f} MB, "
            f"anonymous {broker.lastAnonKb / 1024:.0f} MB"
        )
        broker.start()
        consumer = Consumer({**RDKAFKA_08, "bootstrap.servers": broker.bootstrap, "group.id": "soak"})
        endsAfter = {p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in ends}
        consumer.close()
        sigterms.append(broker.stop(signal.SIGTERM))
    finally:
        if broker.process is not None and broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait()

    if endsAfter != ends:
        problems.append(f"log ends changed across a clean restart: {ends} -> {endsAfter}")
    # twistd stops cleanly on SIGTERM, then re-raises it: the exit status says "killed by SIGTERM".
    problems += [f"SIGTERM exit code {code}" for code, _ in sigterms if code not in (0, -signal.SIGTERM)]
    logText = broker.logPath.read_text(errors="replace")
    if logText.count("store closed") != len(sigterms):
        problems.append(f"{logText.count('store closed')} 'store closed' lines for {len(sigterms)} clean stops")
    errors = collections.Counter(
        re.sub(r"^\S+ ", "", line) + (" (" + detail.strip() + ")" if detail.strip() else "")
        for line, detail in re.findall(r"^(\S+ \[[^]]*#(?:critical|error)\].*)\n(?:\tTraceback.*\n\t(.*)\n)?", logText, re.M)
    )
    if errors or "Unhandled" in logText:
        problems.append(f"errors in the broker log {broker.logPath}:")
        problems += [f"  {count} x {line}" for line, count in errors.most_common(5)]
    acked = sum(map(len, state["acked"].values()))
    dataBytes = sum(f.stat().st_size for f in (workDir / "data").rglob("*") if f.is_file())
    print(
        f"cycles: {args.cycles} ({len(sigterms) - 2} ended by SIGTERM, {args.cycles - len(sigterms) + 2} by SIGKILL), then two clean restarts, "
        f"{args.partitions} partitions{', --sync' if args.sync else ''}, seed {args.seed}\n"
        f"messages sent: {state['sent']:,}; acked: {acked:,}; failed deliveries: {sum(failedDeliveries.values()):,} {dict(failedDeliveries)}\n"
        f"messages found: {counts['found']:,} (log ends {', '.join(f'{end:,}' for end in ends.values())}); "
        f"acked and present: {counts['ackedPresent']:,}; unacked but present: {counts['unackedPresent']:,}; "
        f"acked but lost: {counts['lost']:,}\n"
        f"SIGTERM exits: {', '.join(f'{code} in {seconds:.2f} s' for code, seconds in sigterms)}\n"
        f"broker peak RSS (VmHWM) over all runs: {broker.peakRssKb / 1024:.0f} MB (with the LevelDB table files it mapped); "
        f"anonymous RSS at most {broker.peakAnonKb / 1024:.0f} MB; data dir {dataBytes / 1e6:.0f} MB; "
        f"{time.monotonic() - began:.0f} s in all"
    )
    if problems:
        print("FAILED:", *problems[:50], sep="\n  ")
    else:
        print("OK: every acknowledged message is stored exactly once, at its acknowledged offset, without holes")
    if args.keep or problems:
        log(f"kept {workDir}")
    else:
        shutil.rmtree(workDir)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
