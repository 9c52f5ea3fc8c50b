"""The OTLP/HTTP collector: one process owns the DuckDB file, every other process sends to it.

* :mod:`.decode` turns an OTLP ``ExportTraceServiceRequest`` (protobuf or JSON, gzip or not)
  into the same rows the in-process writer makes, mapping foreign GenAI spans
  (OpenInference, OpenLLMetry) onto the store's columns;
* :mod:`.sink` writes them through the exporter's path, one transaction per group of
  requests, acknowledging a request only once its rows are committed and never writing a
  batch twice;
* :mod:`.server` is the Starlette app (``/v1/traces`` and the reads) run by uvicorn;
* :mod:`.client` is the worker side: an OTLP/HTTP span exporter with an on-disk spool;
* :mod:`.election` picks, among the processes sharing a home, the one that owns the store.

Nothing here is imported by ``import agentgym_runtime``; Starlette and uvicorn come with the
``collector`` extra.
"""
