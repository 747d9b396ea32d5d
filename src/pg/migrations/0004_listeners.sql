-- durably schema v4 on PostgreSQL: which processes want run events.
--
-- Every process used to NOTIFY its run events whether or not anyone listened:
-- about a fifth of the CPU of a step (Node and server), and every listening
-- backend woken at each such commit. A process registers here while
-- something in it listens to every event (waitForRun, subscribe,
-- /runs/subscribe), and publishers notify only while a registration is alive
-- (src/pg/events.rs). A registration takes this table's ACCESS EXCLUSIVE lock,
-- so it waits for every publish that read the table without it: an event
-- not published for a new listener was committed before it registered, and
-- the listener's first read sees its effect. Rows expire unless refreshed:
-- a process that died stops counting after at most a minute.
CREATE TABLE listeners (
  owner      text PRIMARY KEY,              -- the registering process's lease owner id
  expires_at timestamptz NOT NULL
);
