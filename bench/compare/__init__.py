"""Kubeline next to Apache Airflow 3 and Prefect 3 on the same machine: ``python bench/compare/run.py``.

Pure helpers (``workloads``, ``stats``, ``report``) are unit-tested; the engine adapters start real
servers in their own virtualenvs and are exercised only by running the benchmark.
"""
