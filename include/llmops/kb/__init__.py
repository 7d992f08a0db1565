"""Knowledge-base indexing: sources, loaders, chunking, keys, embedders, the Milvus index manager (`index`),
the pure re-index decisions (`plan`) and the pipeline that carries them out (`pipeline`).

The Milvus collection is its own record: every row carries the document id, the document's content
hash, the chunk index and the document's chunk count, and the collection carries the embedder and
chunking fingerprint as a property. There is no sidecar database that could drift from the store;
each incremental run compares the source with the rows actually in Milvus and repairs the difference.

    from llmops.kb.pipeline import reindex
    summary = reindex(kb, "incremental", index=index, embedder=embedder)
"""
