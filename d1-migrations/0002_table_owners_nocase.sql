-- SQLite compares table names without regard to ASCII case, so `eventlog_7_Ab` and
-- `eventlog_7_aB` are one table: claims are compared the same way (COLLATE NOCASE), and this
-- index keeps that lookup from scanning every claim. The Worker also creates it if missing.
CREATE INDEX IF NOT EXISTS livestore_table_owners_nocase
  ON livestore_table_owners (tableName COLLATE NOCASE);
