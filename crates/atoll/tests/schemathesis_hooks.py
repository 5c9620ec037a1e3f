"""Schemathesis hooks for tests/api_fuzz.rs: `logs?follow=true` streams until the client
leaves, by design, so the fuzzer asks for what is there and not for the rest of time."""
import schemathesis


@schemathesis.hook
def map_query(ctx, query):
    if query and "follow" in query:
        query["follow"] = False
    return query
