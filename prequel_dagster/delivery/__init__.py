"""Delivery: the Batch API wire format, batching, HTTP with retries and pacing, the reference receiver."""
