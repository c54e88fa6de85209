"""Runs SQL reports on DuckDB over a tidemark history directory, one round per line read
from stdin: each round runs every report once and prints, as one JSON line, per report
the time in milliseconds, the row count, and the sum of each column (0 for columns that
are not numbers), to compare answers with tidemark's. The caller alternates rounds with
its own runs, so that both engines see the machine in the same state.

usage: duckdb_reports.py HISTORY_DIR THREADS SQL...
"""

import decimal
import json
import sys
import time

import duckdb

directory, threads, reports = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
db = duckdb.connect()
db.execute(f"SET threads = {threads}")
db.execute("SET TimeZone = 'UTC'")
files = f"{directory}/date=*/*.parquet".replace("'", "''")
db.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{files}', hive_partitioning = false)")
for _ in sys.stdin:
    results = []
    for sql in reports:
        started = time.perf_counter()
        rows = db.execute(sql).fetchall()
        elapsed = (time.perf_counter() - started) * 1000
        width = len(rows[0]) if rows else 0
        sums = [0.0] * width
        for row in rows:
            for column, value in enumerate(row):
                if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
                    sums[column] += float(value)
        results.append({"ms": elapsed, "rows": len(rows), "sums": sums})
    print(json.dumps(results), flush=True)
