"""Retention evaluator: which KV pages to keep across tool gaps, measured against Bélády.

- :mod:`.workload`: sessions on one timeline (Poisson arrivals or the trace's own), prompts
  compressed into radix-trie segments, the peak working set W;
- :mod:`.cache`: the page-level replay (radix prefix semantics, tail-first leaf eviction);
- :mod:`.policies`: tail-first LRU, fixed TTL pin, the paper's weighted score, SAGA's
  value-density policy and the offline oracle;
- :mod:`.gapmodel`, :mod:`.predictors`: held-out predictions for the online policies;
- :mod:`.evaluate`: the (capacity × policy) grid; :mod:`.cli`: ``saga graphs eval``.

See ``docs/retention.md``.
"""
