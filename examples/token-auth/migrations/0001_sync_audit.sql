-- Audit trail written by the example's sync hooks.
CREATE TABLE IF NOT EXISTS sync_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hook TEXT NOT NULL,
  storeId TEXT NOT NULL,
  payload TEXT,
  batchSize INTEGER,
  headers TEXT,
  at TEXT NOT NULL
);
