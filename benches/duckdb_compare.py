#!/usr/bin/env python3
"""The same GROUP BYs as `cargo bench --bench aggregate`, run by DuckDB over the rows the
bench exported, printed beside Tidemark's figures with the ratio.

    cargo bench --bench aggregate -- --store /tmp/bench-store --export /tmp/agg-export
    pip install duckdb
    python3 benches/duckdb_compare.py /tmp/agg-export [--runs 50]

The rows are loaded into an in-memory DuckDB table first (not timed); each query is then
run `--runs` times and its median reported. Tidemark's figure is the whole perturbed
answer with margins; DuckDB's is the bare GROUP BY.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="the directory the bench's --export wrote")
    parser.add_argument("--runs", type=int, default=50, help="runs per query (median reported)")
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        print("error: DuckDB is not installed: run `pip install duckdb`", file=sys.stderr)
        return 2
    figures = json.loads((args.export / "tidemark.json").read_text())
    db = duckdb.connect()
    db.execute("SET threads TO 2")
    db.execute(
        f"""CREATE TABLE reports AS SELECT * EXCLUDE (nationalities),
              string_split(coalesce(nationalities, ''), ';') AS nationalities
            FROM read_csv('{args.export / "reports.csv"}', header = true,
              types = {{'state': 'VARCHAR', 'origin': 'VARCHAR', 'destination': 'VARCHAR',
                       'fee_currency': 'VARCHAR', 'nationalities': 'VARCHAR',
                       'latitude': 'DOUBLE', 'longitude': 'DOUBLE'}})"""
    )
    rows = db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
    print(f"DuckDB {duckdb.__version__}, {rows} rows, 2 threads; median of {args.runs} runs")
    print(f"{'query':<50} {'tidemark ms':>12} {'duckdb ms':>10} {'duckdb/tidemark':>16}")
    for f in figures:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            db.execute(f["duckdb"]).fetchall()
            times.append(time.perf_counter() - started)
        duck = statistics.median(times) * 1e3
        ours = f["tidemark_p50_ms"]
        print(f"{f['name']:<50} {ours:>12.3f} {duck:>10.2f} {duck / ours:>15.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
