#!/usr/bin/env python3
"""A small clip-worker client: wire protocol v1 (MessagePack over NATS), see docs/protocol.md.

    pip install -r examples/python/requirements.txt
    python examples/python/client.py --server nats://127.0.0.1:4222 --image cat.png "a cat" "a dog"

It runs three steps and prints one JSON line for each:
  1. encode the sentences (and the image) by request/reply on `<prefix>.encode`;
  2. rank the other sentences (and the image) against the first sentence on `<prefix>.rank`;
  3. the same encode as a durable JetStream job on `<prefix>.jobs.encode`, its result read from
     the inbox named in the `Clip-Reply-To` header.

Every call carries a W3C `traceparent` header, so the worker's spans join the caller's trace and the
reply carries it back. With the OpenTelemetry SDK installed and configured (`pip install
opentelemetry-sdk opentelemetry-exporter-otlp`, `OTEL_*` variables) it is the context of a
`send <subject>` span of this client; without it, fresh random ids (no extra package needed).
"""

import argparse
import asyncio
import contextlib
import json
import secrets
import struct
import sys
import uuid

import msgpack
import nats

try:  # numpy is optional: it only makes decoding shorter.
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


try:  # OpenTelemetry is optional: without it the trace context is made by hand.
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover
    trace = None


@contextlib.contextmanager
def traced(subject):
    """Headers with the trace context of one call: a producer span's when an OpenTelemetry SDK is
    set up, else a fresh W3C `traceparent` (random trace and span ids, sampled)."""
    span = contextlib.nullcontext()
    if trace is not None:
        tracer = trace.get_tracer("clip-worker-example")
        span = tracer.start_as_current_span(f"send {subject}", kind=trace.SpanKind.PRODUCER)
    with span:
        headers = {}
        if trace is not None:
            propagate.inject(headers)
        if "traceparent" not in headers:  # the API alone (no SDK) injects nothing
            headers = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
        yield headers


def trace_id(headers):
    """The trace id of a `traceparent` header (None when absent)."""
    parts = (headers or {}).get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None


def with_trace(line, sent, reply_headers):
    """Adds the call's trace id, and whether the reply continued that trace."""
    line["trace_id"] = trace_id(sent)
    line["trace_continued"] = trace_id(reply_headers) == line["trace_id"]
    return line


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
        subject = f"{args.prefix}.encode"
        with traced(subject) as headers:
            msg = await nc.request(subject, pack(docs), timeout=args.timeout, headers=headers)
        encoded = unpack(msg.data)
        print(json.dumps(with_trace(summary("encode", encoded), headers, msg.headers)), flush=True)

        # 2. Rank: the first document is the query, the rest are its matches.
        if len(docs) > 1:
            query = dict(docs[0], matches=docs[1:])
            subject = f"{args.prefix}.rank"
            with traced(subject) as headers:
                msg = await nc.request(subject, pack([query]), timeout=args.timeout, headers=headers)
            root = unpack(msg.data)["docs"][0]
            if root.get("error"):
                raise RuntimeError(f"rank failed: {root['error']}")
            ranked = [
                {"id": m["id"], **m["scores"]} if m.get("scores") else {"id": m["id"], "error": m["error"]}
                for m in root["matches"]
            ]
            line = {"step": "rank", "query": root["id"], "ranked": ranked}
            print(json.dumps(with_trace(line, headers, msg.headers)), flush=True)

        # 3. Durable job: subscribe to an inbox FIRST, then publish with a JetStream ack.
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        job_id = str(uuid.uuid4())  # Nats-Msg-Id: JetStream drops a re-published duplicate.
        js = nc.jetstream()
        subject = f"{args.prefix}.jobs.encode"
        with traced(subject) as trace_headers:
            ack = await js.publish(
                subject,
                pack(docs),
                headers={"Clip-Reply-To": inbox, "Nats-Msg-Id": job_id, **trace_headers},
                timeout=args.timeout,
            )
        while True:  # results carry the job id in `Clip-Job-Id`; skip anything else
            msg = await sub.next_msg(timeout=args.timeout)
            if (msg.headers or {}).get("Clip-Job-Id") == job_id:
                break
        await sub.unsubscribe()
        result = unpack(msg.data)
        line = with_trace(summary("job", result), trace_headers, msg.headers)
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
