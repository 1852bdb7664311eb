"""Drives a running clip-server (CLIP-as-service, the original) through its own client with the
inputs `clip-worker bench --save-inputs` wrote, at a given client batch size and number of
requests in flight, and prints one JSON object: documents, seconds, documents per second.

    python drive_original.py --server grpc://127.0.0.1:51000 --inputs DIR --workload text \
        --batch-size 32 --concurrency 4 --docs 256
"""

import argparse
import glob
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--inputs", required=True, help="folder with texts.txt and images/")
    p.add_argument("--workload", choices=["text", "image"], required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True, help="the client's prefetch")
    p.add_argument("--docs", type=int, required=True)
    a = p.parse_args()

    from clip_client import Client

    if a.workload == "text":
        with open(os.path.join(a.inputs, "texts.txt"), encoding="utf-8") as f:
            pool = [line.rstrip("\n") for line in f if line.strip()]
    else:
        pool = sorted(glob.glob(os.path.join(a.inputs, "images", "*")))
    if not pool:
        raise SystemExit(f"no {a.workload} inputs in {a.inputs}")
    docs = [pool[i % len(pool)] for i in range(a.docs)]

    client = Client(a.server)
    # One request first, as the worker's start-up warm-up does on the other side.
    client.encode(docs[: a.batch_size], batch_size=a.batch_size)
    start = time.perf_counter()
    out = client.encode(docs, batch_size=a.batch_size, prefetch=a.concurrency)
    seconds = time.perf_counter() - start
    if len(out) != len(docs):
        raise SystemExit(f"{len(out)} embeddings for {len(docs)} documents")
    print(json.dumps({"docs": len(docs), "seconds": seconds, "docs_per_s": len(docs) / seconds}))


if __name__ == "__main__":
    main()
