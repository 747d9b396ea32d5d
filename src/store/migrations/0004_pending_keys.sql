-- The concurrency keys that may have pending runs (issue 13). A claim that
-- finds too few claimable runs among the oldest pending ones looks at the
-- head of each free key: schema 3 found those keys with a skip-scan of the
-- pending runs' index, one search per key, each a page that another
-- process's commit had just evicted from this connection's cache (with 8
-- worker processes on 32 keys, about half of a claim's time).
--
-- A superset: every key with a pending run is here (the writes that make a
-- run pending add its key, in the same transaction); a claim that takes a
-- key's last pending run removes the key, and the key-by-key search removes
-- the keys it finds with no pending and no running run (their pending runs
-- were cancelled).
CREATE TABLE pending_keys (
  concurrency_key TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;

INSERT INTO pending_keys (concurrency_key)
  SELECT DISTINCT concurrency_key FROM runs
  WHERE status = 'pending' AND concurrency_key IS NOT NULL;
