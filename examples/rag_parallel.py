"""Fan-out retrieval over shards with a concurrency limit and per-shard timeouts, then rerank.

A slow shard does not sink the query: its step times out (`timeout=`) and degrades to no
results (`default=[]`), visible in the trace as an `exception` event on that shard's span.
"""

from __future__ import annotations

import anyio
import spanflow

SHARDS = {
    f"shard-{i}": [
        f"doc-{i}-{j}: about {topic}" for j, topic in enumerate(["refunds", "shipping", "accounts"])
    ]
    for i in range(8)
}
SLOW_SHARD = "shard-5"


@spanflow.step(kind="retriever", timeout=0.2, default=[])
async def search_shard(shard: str, query: str) -> list[str]:
    """Stand-in for a vector search against one shard (one of them hangs)."""
    await anyio.sleep(2.0 if shard == SLOW_SHARD else 0.01)
    return [doc for doc in SHARDS[shard] if query in doc]


@spanflow.step(kind="reranker")
def rerank(query: str, docs: list[str], top_k: int = 3) -> list[str]:
    """Deterministic stand-in for a cross-encoder: shorter documents first."""
    return sorted(docs, key=lambda d: (len(d), d))[:top_k]


@spanflow.workflow
async def rag(query: str) -> list[str]:
    """Search every shard, at most three at a time, and keep the best documents."""
    per_shard = await spanflow.parallel(*(search_shard(s, query) for s in SHARDS), limit=3)
    hits = [doc for docs in per_shard for doc in docs]
    return rerank(query, hits)


if __name__ == "__main__":
    print(anyio.run(rag, "refunds"))
