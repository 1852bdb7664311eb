"""Chaos soak for clip-worker: workers consume JetStream jobs while they are SIGKILLed and
restarted and NATS (one server, or one node of a three-node cluster) is killed and restarted.

Run through scripts/chaos.sh, which finds the binary and the Python environment. Afterwards it
checks that every valid job has exactly one result, every poison job one error result, nothing
is left on the stream or the consumer, and no worker exited on its own. Exit status 0 when all
of that holds.
"""

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

JOB_STREAM = "CLIP_JOBS"
JOB_CONSUMER = "clip-workers"
RESULT_STREAM = "CHAOS_RESULTS"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def peak_rss_kib(pid):
    """VmHWM (peak resident set) of a running process, in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class NatsNode:
    """One nats-server process; restartable on the same ports and store."""

    def __init__(self, binary, workdir, name, cluster_routes=None, cluster_port=None):
        self.binary, self.name = binary, name
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = workdir / f"store-{name}"
        self.conf = workdir / f"{name}.conf"
        self.log = workdir / f"{name}.log"
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.port}",
            "max_payload: 8MB",
            f'jetstream {{ store_dir: "{self.store}" }}',
        ]
        if cluster_routes is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_routes)
            lines.append(
                f"cluster {{ name: chaos, listen: 127.0.0.1:{cluster_port}, routes: [{routes}] }}"
            )
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_port(self.port)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class WorkerSlot:
    """One of the workers: restarted after each SIGKILL, its peak RSS kept across restarts."""

    def __init__(self, index, args, workdir):
        self.index, self.args = index, args
        self.log = workdir / f"worker-{index}.log"
        self.proc = None
        self.peak_kib = 0
        self.kills = 0
        self.unexpected = []

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=log, env=worker_env()
            )

    def sample(self):
        if self.proc and self.proc.poll() is None:
            self.peak_kib = max(self.peak_kib, peak_rss_kib(self.proc.pid))

    def check_alive(self):
        """Records (and replaces) a worker that exited without being killed."""
        if self.proc and self.proc.poll() is not None:
            self.unexpected.append(self.proc.returncode)
            print(f"worker {self.index} exited on its own ({self.proc.returncode})", flush=True)
            self.start()

    def kill(self):
        self.sample()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self):
        self.sample()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def worker_env():
    env = dict(os.environ)
    env.setdefault("CLIP_WORKER_LOG", "clip_worker=info")
    env["CLIP_WORKER_METRICS_ADDR"] = "off"
    return env


def make_jobs(count, poison_rate, images, rng):
    """(id, subject, payload, poison) for each job: texts, images and both, ~poison_rate bad."""
    bad_payloads = [
        b"\xc1 not msgpack",
        msgpack.packb({"id": "no-docs"}),
        msgpack.packb({"docs": "not a list"}),
    ]
    jobs = []
    for i in range(count):
        job_id = f"chaos-{i}"
        if rng.random() < poison_rate:
            jobs.append((job_id, "clip.jobs.encode", rng.choice(bad_payloads), True))
            continue
        kind = i % 3
        docs = []
        if kind in (0, 2):
            docs += [{"text": f"job {i}: a photo of thing {rng.randrange(1000)}"}]
        if kind in (1, 2):
            docs += [{"blob": rng.choice(images)} for _ in range(rng.randint(1, 2))]
        if i % 10 == 9:
            # A rank job: one text ranked against images.
            root = {"text": f"rank {i}", "matches": [{"blob": rng.choice(images)}, {"blob": rng.choice(images)}]}
            jobs.append((job_id, "clip.jobs.rank", msgpack.packb({"docs": [root]}), False))
        else:
            jobs.append((job_id, "clip.jobs.encode", msgpack.packb({"docs": docs}), False))
    return jobs


async def publish_jobs(js, jobs, published):
    """Publishes every job, retrying (same Nats-Msg-Id: the stream drops duplicates) until stored."""

    async def one(job_id, subject, payload):
        headers = {"Nats-Msg-Id": job_id, "Clip-Reply-To": f"chaos.results.{job_id}"}
        while True:
            try:
                await js.publish(subject, payload, headers=headers, timeout=5)
                published.append(job_id)
                return
            except Exception:  # noqa: BLE001 - the server is being killed: try again
                await asyncio.sleep(0.3)

    for start in range(0, len(jobs), 25):
        chunk = jobs[start : start + 25]
        await asyncio.gather(*(one(j, s, p) for j, s, p, _ in chunk))
        await asyncio.sleep(0.02)


async def stored_results(js):
    try:
        return (await js.stream_info(RESULT_STREAM)).state.messages
    except Exception:  # noqa: BLE001 - during a restart
        return None


async def read_results(js):
    """Job id -> list of decoded responses stored in the results stream."""
    info = await js.stream_info(RESULT_STREAM)
    out = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(RESULT_STREAM, seq)
        job_id = (msg.headers or {}).get("Clip-Job-Id")
        out.setdefault(job_id, []).append(msgpack.unpackb(msg.data, raw=False))
    return out


def valid_result(resp, subject):
    """An answer with no error anywhere: embeddings for encode, scored matches for rank."""
    docs = resp.get("docs") or []
    if resp.get("error") or not docs:
        return False
    for doc in docs:
        if doc.get("error"):
            return False
        if subject.endswith("rank"):
            matches = doc.get("matches") or []
            if not matches or any(m.get("error") or not m.get("scores") for m in matches):
                return False
        elif doc.get("embedding") is None:
            return False
    return True


async def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--nats-server", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--images", required=True, help="folder of small images used as blobs")
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kills", type=int, default=8, help="worker SIGKILLs")
    ap.add_argument("--poison", type=float, default=0.05)
    ap.add_argument("--cluster", action="store_true", help="three-node NATS cluster, R3 job stream")
    ap.add_argument("--ack-wait", default="3s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=540, help="seconds before giving up")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (logs, stores)")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="clip-chaos-"))
    images = [p.read_bytes() for p in sorted(Path(args.images).glob("*")) if p.suffix in (".png", ".jpg", ".webp", ".bmp", ".gif")]
    images = [b for b in images if len(b) < 64 * 1024]
    jobs = make_jobs(args.jobs, args.poison, images, rng)
    poison_ids = {j for j, _, _, bad in jobs if bad}

    if args.cluster:
        cluster_ports = [free_port() for _ in range(3)]
        nodes = [
            NatsNode(args.nats_server, workdir, f"n{i + 1}", cluster_ports, cluster_ports[i])
            for i in range(3)
        ]
    else:
        nodes = [NatsNode(args.nats_server, workdir, "n1")]
    for n in nodes:
        n.start()
    urls = [n.url for n in nodes]
    replicas = 3 if args.cluster else 1

    async def quiet(_error):
        pass  # connection errors are expected here: servers are killed on purpose

    nc = await nats.connect(
        servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=quiet
    )
    js = nc.jetstream(timeout=10)
    for attempt in range(60):
        try:
            # The job stream as the workers would create it, replicated in cluster mode.
            await js.add_stream(StreamConfig(
                name=JOB_STREAM, subjects=["clip.jobs.encode", "clip.jobs.rank"],
                retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                num_replicas=replicas, duplicate_window=600,
            ))
            await js.add_stream(StreamConfig(
                name=RESULT_STREAM, subjects=["chaos.results.>"], storage=StorageType.FILE,
                num_replicas=replicas, duplicate_window=600,
            ))
            break
        except Exception as e:  # noqa: BLE001 - the cluster is still electing its meta leader
            if attempt == 59:
                raise
            print(f"stream setup: {e!r}; retrying", flush=True)
            await asyncio.sleep(1)

    worker_args = [
        args.binary, "serve", "--model-dir", args.model_dir, "--device", "cpu",
        "--nats-url", ",".join(urls), "--mode", "jobs", "--ack-wait", args.ack_wait,
        "--nak-delay", "500ms", "--num-worker-preprocess", "1", "--intra-threads", "1",
        "--shutdown-timeout", "10s",
    ]
    workers = [WorkerSlot(i, worker_args, workdir) for i in range(args.workers)]
    for w in workers:
        w.start()

    started = time.monotonic()
    published = []
    publisher = asyncio.create_task(publish_jobs(js, jobs, published))
    kills_left = args.kills
    nats_event_done = False
    next_kill = time.monotonic() + rng.uniform(2, 5)
    done = 0
    events = []
    next_report = time.monotonic() + 10
    print(f"chaos: {len(jobs)} jobs ({len(poison_ids)} poison), {args.workers} workers, "
          f"{'3-node cluster' if args.cluster else 'single NATS'}; logs in {workdir}", flush=True)
    while True:
        await asyncio.sleep(0.25)
        for w in workers:
            w.sample()
            w.check_alive()
        count = await stored_results(js)
        if count is not None:
            done = count
        progress = done / len(jobs)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 10
            print(f"{now - started:6.1f}s: {len(published)} published, {done} results", flush=True)
        if kills_left > 0 and now >= next_kill and progress < 0.9:
            w = rng.choice(workers)
            w.kill()
            kills_left -= 1
            events.append(f"{now - started:6.1f}s kill worker {w.index} at {done} results")
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            w.start()
            # Spread the kills over the run.
            next_kill = time.monotonic() + rng.uniform(1.5, 5)
        if not nats_event_done and progress >= 0.5:
            nats_event_done = True
            node = rng.choice(nodes)
            node.kill()
            events.append(f"{now - started:6.1f}s kill NATS {node.name} at {done} results")
            await asyncio.sleep(5 if args.cluster else 1)
            node.start()
            events.append(f"{time.monotonic() - started:6.1f}s NATS {node.name} back")
        if done >= len(jobs) and publisher.done():
            break
        if now - started > args.timeout:
            print(f"timeout: {done} of {len(jobs)} results", flush=True)
            break
    elapsed = time.monotonic() - started

    # Acks trail the results a little: wait for the consumer to settle.
    consumer = None
    for _ in range(120):
        try:
            consumer = await js.consumer_info(JOB_STREAM, JOB_CONSUMER)
            stream = await js.stream_info(JOB_STREAM)
            if consumer.num_pending == 0 and consumer.num_ack_pending == 0 and stream.state.messages == 0:
                break
        except Exception:  # noqa: BLE001
            pass
        await asyncio.sleep(0.5)
    stream = await js.stream_info(JOB_STREAM)
    results = await read_results(js)
    for w in workers:
        w.check_alive()
        w.stop()
    await nc.close()
    for n in nodes:
        n.kill()

    problems = []
    for job_id, subject, _, bad in jobs:
        got = results.get(job_id, [])
        if len(got) != 1:
            problems.append(f"{job_id}: {len(got)} results")
        elif bad and not got[0].get("error"):
            problems.append(f"{job_id}: poison job without an error result")
        elif not bad and not valid_result(got[0], subject):
            problems.append(f"{job_id}: bad result {str(got[0])[:200]}")
    extra = set(results) - {j for j, _, _, _ in jobs}
    if extra:
        problems.append(f"results for unknown jobs: {sorted(extra)[:5]}")
    if consumer is None or consumer.num_pending or consumer.num_ack_pending or stream.state.messages:
        problems.append(
            f"left over: stream {stream.state.messages} messages, consumer "
            f"{consumer and consumer.num_pending} pending, {consumer and consumer.num_ack_pending} unacked"
        )
    for w in workers:
        if w.unexpected:
            problems.append(f"worker {w.index} exited on its own: {w.unexpected}")

    print("\n".join(events))
    print(f"mode:            {'cluster (3 nodes, R3 job stream)' if args.cluster else 'single NATS server'}")
    print(f"jobs:            {len(jobs)} ({len(poison_ids)} poison), results stored {sum(len(v) for v in results.values())}")
    print(f"worker kills:    {sum(w.kills for w in workers)} SIGKILL; NATS kills: 1")
    print(f"elapsed:         {elapsed:.1f} s")
    for w in workers:
        print(f"worker {w.index} peak RSS: {w.peak_kib / 1024:.1f} MiB ({w.kills} kills)")
    if problems:
        print(f"FAILED ({len(problems)} problems):")
        print("\n".join(problems[:30]))
        print(f"logs kept in {workdir}")
        return 1
    print("OK: every valid job one result, every poison job one error result, nothing pending, no worker died on its own")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
