"""Prometheus metrics: counters every worker writes into shared memory, summed on scrape.

- layout: which series a config has, and the registry that gives each group of series its
  slots (stable across reloads for the series a reload keeps);
- store: the shared mapping (a row of slots per worker, the retired row, the master's own);
- recorder: the per-request calls (one small object per route, peer and zone);
- binding: a worker's recorders, built once per config;
- exposition and endpoint: the text format, and the tiny HTTP server that serves it.

Nothing here imports server/ or upstream/: they call into it.
"""
