-- Which store owns which event-log table. Event-log tables (eventlog_7_<storeId>) are
-- created by the Worker on first use with the exact DDL of @livestore/sync-cf, and store ids
-- are sanitized into table names, so two ids can map to one name (`a-b`, `a_b`). The first
-- store to claim a name keeps it; the other is refused instead of sharing its log.
-- The Worker also creates this table if it is missing.
CREATE TABLE IF NOT EXISTS livestore_table_owners (
  tableName TEXT PRIMARY KEY NOT NULL,
  storeId TEXT NOT NULL,
  claimedAt TEXT NOT NULL
) STRICT;
