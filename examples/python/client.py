#!/usr/bin/env python3
"""A small clip-worker client: wire protocol v1 (MessagePack over NATS), see docs/protocol.md.

    pip install -r examples/python/requirements.txt
    python examples/python/client.py --server nats://127.0.0.1:4222 --image cat.png "a cat" "a dog"

It runs three steps and prints one JSON line for each:
  1. encode the sentences (and the image) by request/reply on `<prefix>.encode`;
  2. rank the other sentences (and the image) against the first sentence on `<prefix>.rank`;
  3. the same encode as a durable JetStream job on `<prefix>.jobs.encode`, its result read from
     the inbox named in the `Clip-Reply-To` header.
"""

import argparse
import asyncio
import json
import struct
import sys
import uuid

import msgpack
import nats

try:  # numpy is optional: it only makes decoding shorter.
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def pack(docs, normalize=False):
    """A v1 request: a map with `docs` (required) and optional `params`. Bytes (`blob`) go out as
    MessagePack bin: raw file bytes, never base64 text."""
    return msgpack.packb({"docs": docs, "params": {"normalize": normalize}}, use_bin_type=True)


def unpack(payload):
    """A v1 response; a request-level failure has `error` set and `docs: []`."""
    response = msgpack.unpackb(payload, raw=False)
    if response.get("error"):
        err = response["error"]
        raise RuntimeError(f"request failed: {err['code']}: {err['message']}")
    return response


def embedding(doc):
    """The little-endian vector of a result document, as a list of floats."""
    emb = doc["embedding"]
    n = emb["shape"][0]
    if np is not None:
        return np.frombuffer(emb["data"], dtype="<f4" if emb["dtype"] == "f32" else "<f2").astype(float).tolist()
    return list(struct.unpack(f"<{n}{'f' if emb['dtype'] == 'f32' else 'e'}", emb["data"]))


def documents(texts, image):
    docs = [{"id": f"text-{i}", "text": t} for i, t in enumerate(texts)]
    if image:
        with open(image, "rb") as f:
            docs.append({"id": "image", "blob": f.read()})
    return docs


def summary(step, response):
    docs = response["docs"]
    return {
        "step": step,
        "model": response["model"],
        "ids": [d["id"] for d in docs],
        "modalities": [d.get("modality") for d in docs],
        "dims": [len(embedding(d)) if d.get("embedding") else None for d in docs],
        "errors": [d["error"]["code"] if d.get("error") else None for d in docs],
    }


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("texts", nargs="*", default=["a photo of a cat", "a photo of a dog", "a diagram"])
    ap.add_argument("--server", default="nats://127.0.0.1:4222", help="NATS server URL")
    ap.add_argument("--prefix", default="clip", help="subject prefix the workers serve")
    ap.add_argument("--image", help="an image file to send as `blob`")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer")
    args = ap.parse_args()

    nc = await nats.connect(args.server, connect_timeout=5, max_reconnect_attempts=2)
    try:
        docs = documents(args.texts, args.image)

        # 1. Request/reply encode.
        msg = await nc.request(f"{args.prefix}.encode", pack(docs), timeout=args.timeout)
        encoded = unpack(msg.data)
        print(json.dumps(summary("encode", encoded)), flush=True)

        # 2. Rank: the first document is the query, the rest are its matches.
        if len(docs) > 1:
            query = dict(docs[0], matches=docs[1:])
            msg = await nc.request(f"{args.prefix}.rank", pack([query]), timeout=args.timeout)
            root = unpack(msg.data)["docs"][0]
            if root.get("error"):
                raise RuntimeError(f"rank failed: {root['error']}")
            ranked = [
                {"id": m["id"], **m["scores"]} if m.get("scores") else {"id": m["id"], "error": m["error"]}
                for m in root["matches"]
            ]
            print(json.dumps({"step": "rank", "query": root["id"], "ranked": ranked}), flush=True)

        # 3. Durable job: subscribe to an inbox FIRST, then publish with a JetStream ack.
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        job_id = str(uuid.uuid4())  # Nats-Msg-Id: JetStream drops a re-published duplicate.
        js = nc.jetstream()
        ack = await js.publish(
            f"{args.prefix}.jobs.encode",
            pack(docs),
            headers={"Clip-Reply-To": inbox, "Nats-Msg-Id": job_id},
            timeout=args.timeout,
        )
        while True:  # results carry the job id in `Clip-Job-Id`; skip anything else
            msg = await sub.next_msg(timeout=args.timeout)
            if (msg.headers or {}).get("Clip-Job-Id") == job_id:
                break
        await sub.unsubscribe()
        result = unpack(msg.data)
        line = summary("job", result)
        line["job_id"] = job_id
        line["stream"] = ack.stream
        line["protocol"] = (msg.headers or {}).get("Clip-Protocol")
        line["same_as_request_reply"] = all(
            max(abs(a - b) for a, b in zip(embedding(x), embedding(y))) < 1e-5
            for x, y in zip(encoded["docs"], result["docs"])
            if x.get("embedding") and y.get("embedding")
        )
        print(json.dumps(line), flush=True)
    finally:
        await nc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # a clear one-line error and a non-zero exit for scripts
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
