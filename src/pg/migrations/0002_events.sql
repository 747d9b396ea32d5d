-- durably schema v2 on PostgreSQL: run events too large for a NOTIFY payload
-- (about 8000 bytes), published by reference (see src/pg/events.rs). Rows
-- are read at once by every listening process and deleted after a few
-- minutes; nothing else refers to them.
CREATE TABLE events (
  id         bigserial PRIMARY KEY,
  origin     text NOT NULL,                 -- the publishing process's lease owner id
  run_id     text NOT NULL,
  payload    text NOT NULL,                 -- the event's JSON text, exactly as published
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_created_at ON events (created_at);
