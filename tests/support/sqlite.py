#!/usr/bin/env python3
"""Reads (or, with the worker stopped, writes) the SQLite file of one store's Durable Object, or
the local D1 database.

Called by worker.mjs's doSql with one JSON argument:
  {"dir": <DO state dir>, "storeId": ..., "table": <eventlog table of the store>,
   "sql": <optional SQL>, "params": [...], "write": bool, "ifTable": <optional table name>}
or by its d1 with {"d1": true, "dir": <D1 state dir>, "sql", "params", "write"}: the one database
file in that dir (a test Worker binds one D1 database).

The file names are hex ids that can't be predicted, so every *.sqlite file in `dir` is examined.
A file belongs to the store when miniflare's `__miniflare_do_name` holds the storeId (the name
given to idFromName), or its `context_7` table has a row for the storeId, or it holds the store's
event-log table. Prints one JSON object: {"file", "tables", "rows"} or {"error"}.
"""

import glob
import json
import os
import sqlite3
import sys


def connect(path, write):
    if write:
        return sqlite3.connect(path, timeout=10)
    # read-only; the worker may be running (WAL mode: -wal and -shm are shared with workerd)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def tables_of(conn):
    return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def belongs_to(conn, tables, store_id, table):
    reasons = []
    if "__miniflare_do_name" in tables:
        if conn.execute("SELECT 1 FROM __miniflare_do_name WHERE name = ?", (store_id,)).fetchone():
            reasons.append("__miniflare_do_name")
    if "context_7" in tables:
        if conn.execute('SELECT 1 FROM "context_7" WHERE "storeId" = ?', (store_id,)).fetchone():
            reasons.append("context_7")
    if table in tables:
        reasons.append(table)
    return reasons


def sqlite_files(directory):
    return sorted(
        f for f in glob.glob(os.path.join(directory, "*.sqlite")) if os.path.basename(f) != "metadata.sqlite"
    )


def run(path, req):
    conn = connect(path, req.get("write", False))
    try:
        conn.row_factory = sqlite3.Row
        tables = tables_of(conn)
        rows = []
        sql = req.get("sql")
        if_table = req.get("ifTable")
        if sql and (if_table is None or if_table in tables):
            cur = conn.execute(sql, req.get("params") or [])
            rows = [dict(r) for r in cur.fetchall()] if cur.description else []
            if req.get("write"):
                conn.commit()
        return {"file": path, "tables": tables, "rows": rows}
    finally:
        conn.close()


def d1(req):
    files = sqlite_files(req["dir"]) if os.path.isdir(req["dir"]) else []
    if len(files) != 1:
        return {"error": f"expected one D1 database file in {req['dir']}, found {len(files)}"}
    return run(files[0], req)


def main():
    req = json.loads(sys.argv[1])
    if req.get("d1"):
        return d1(req)
    directory, store_id, table = req["dir"], req["storeId"], req["table"]
    if not os.path.isdir(directory):
        return {"error": f"no Durable Object state dir {directory}"}
    files = sqlite_files(directory)
    if not files:
        return {"error": f"no Durable Object SQLite files in {directory}"}

    matches = []
    for f in files:
        conn = connect(f, False)
        try:
            tables = tables_of(conn)
            reasons = belongs_to(conn, tables, store_id, table)
        finally:
            conn.close()
        if reasons:
            matches.append((f, reasons))
    if not matches:
        return {"error": f"none of the {len(files)} SQLite files belongs to store {store_id!r}"}
    # Stores whose ids sanitize alike (`a-b`, `a_b`) have same-named event-log tables, each in
    # its own file: a file that names the store outranks one that only has the table.
    named = [m for m in matches if m[1] != [table]]
    if named:
        matches = named
    if len(matches) > 1:
        return {"error": f"several SQLite files claim store {store_id!r}: {matches}"}

    return run(matches[0][0], req)


if __name__ == "__main__":
    try:
        result = main()
    except Exception as e:  # report as JSON so the caller shows the reason
        result = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))
