"""Runs SQL reports on DuckDB over a tidemark history directory and prints, as JSON, per
report: the median time of `runs` runs in milliseconds, the row count, and the sum of
each column (0 for columns that are not numbers), to compare answers with tidemark's.

usage: duckdb_reports.py HISTORY_DIR THREADS RUNS SQL...
"""

import decimal
import json
import statistics
import sys
import time

import duckdb

directory, threads, runs, reports = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
db = duckdb.connect()
db.execute(f"SET threads = {threads}")
db.execute("SET TimeZone = 'UTC'")
files = f"{directory}/date=*/*.parquet".replace("'", "''")
db.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{files}', hive_partitioning = false)")
results = []
for sql in reports:
    times = []
    rows = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = db.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    width = len(rows[0]) if rows else 0
    sums = [0.0] * width
    for row in rows:
        for column, value in enumerate(row):
            if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
                sums[column] += float(value)
    results.append({"median_ms": statistics.median(times), "rows": len(rows), "sums": sums})
print(json.dumps(results))
