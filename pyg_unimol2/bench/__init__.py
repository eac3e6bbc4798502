"""Benchmark harness of the ``benchmarks/*.py`` scripts: split glue
(:mod:`.splits`), baselines (:mod:`.baselines`, :mod:`.geometry`), training
runs (:mod:`.runner`), the paper's numbers (:mod:`.paper`), result tables
(:mod:`.results`) and the shared command line (:mod:`.harness`)."""
