"""The floor: a minimal skeleton of Cortado's stack, measured beside Cortado by `python -m bench`.

Envoy transcoding HTTP to one grpc.aio ingest server that only publishes to a JetStream work queue,
one worker that pulls in batches and writes each result to a KV bucket, and one grpc.aio results
server that answers `GET ?wait=` from a single watch of that bucket. No records of queued or running
requests, no metrics, no idempotency: what any design on this stack costs at least.
"""
