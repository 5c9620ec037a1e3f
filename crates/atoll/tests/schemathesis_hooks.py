"""Schemathesis hooks for tests/api_fuzz.rs: `logs?follow=true` streams until the client
leaves and a stop waits its whole timeout for a process that ignores SIGTERM, by design, so
the fuzzer asks for what is there and not for the rest of time; and data the schema cannot
make realistic (which image exists, which container and network) is filled in."""
import schemathesis


@schemathesis.hook
def map_query(ctx, query):
    if query and "follow" in query:
        query["follow"] = False
    # A stop waits as long as it is told to for a process that ignores SIGTERM.
    for k in ("t", "timeout"):
        if query and isinstance(query.get(k), int) and query[k] > 1:
            query[k] = 1
    return query


@schemathesis.hook
def map_body(ctx, body):
    # Containers of the image the test imported: a create then does what it is asked instead
    # of trying (and retrying) to pull an arbitrary name from a registry no one can reach.
    op = ctx.operation
    if op is not None and op.method.upper() == "POST" and op.path == "/v1/containers" and isinstance(body, dict) and "image" in body:
        body["image"] = "localhost/busybox"
    # Stacks of the imported image, placed anywhere: random images and constraints would only
    # ever be refused (no registry; a constraint language the schema cannot spell).
    if op is not None and op.method.upper() == "POST" and op.path == "/v1/stacks/{name}" and isinstance(body, dict):
        for svc in body.get("services") or []:
            if isinstance(svc, dict):
                if isinstance(svc.get("spec"), dict):
                    svc["spec"]["image"] = "localhost/busybox"
                svc["constraints"] = []
                # Each replica is a real container: a few say as much as a thousand.
                if isinstance(svc.get("replicas"), int):
                    svc["replicas"] = min(svc["replicas"], 2)
    if op is not None and op.path == "/v1/services/{name}/scale" and isinstance(body, dict) and isinstance(body.get("replicas"), int):
        body["replicas"] = min(body["replicas"], 2)
    # Connect the test's container to the test's network (random names only ever find
    # nothing); fixed addresses are valid only inside the network's subnet, which a schema
    # cannot say: let the network allocate them.
    if op is not None and op.path.endswith(("/connect", "/disconnect")) and isinstance(body, dict):
        body["container"] = "fuzzbox"
        body.pop("ipv4", None)
        body.pop("ipv6", None)
    return body


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    op = ctx.operation
    if op is not None and op.path.endswith(("/connect", "/disconnect")) and path_parameters:
        path_parameters["name"] = "fuzznet"
    # The test's stack and its service: random names only ever find nothing.
    if op is not None and op.path.startswith("/v1/services/{name}") and path_parameters:
        path_parameters["name"] = "fuzz_web"
    # Commands in the test's running container: a random ID finds nothing, so the request body
    # (the part worth fuzzing) would never be looked at.
    if op is not None and op.path.endswith("/exec") and path_parameters:
        path_parameters["id"] = "fuzzbox"
    return path_parameters
