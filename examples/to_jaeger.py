"""The support pipeline, exported over OTLP to Jaeger (or any OTLP backend) as well as stored.

Start Jaeger on your machine first (see the README's "Send to Jaeger"), then:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=support \\
        SUPPORT_FIXED=1 python examples/to_jaeger.py

and open http://localhost:16686. The endpoint comes from the standard OpenTelemetry variables;
spanflow reads them itself, so this file contains no exporter code at all.
"""

from __future__ import annotations

import os
import sys

import anyio
import spanflow
from support_pipeline import Ticket, support

if __name__ == "__main__":
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        print(
            "OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans go to the local store only.",
            file=sys.stderr,
        )
    ticket = Ticket(customer="grace@example.com", text="Where is my order? It has not shipped.")
    print(anyio.run(support, ticket))
    spanflow.flush()
    print(
        f"sent to {endpoint or 'the local store'}; run id above in `spanflow runs`", file=sys.stderr
    )
