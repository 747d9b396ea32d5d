-- The same CHECK constraints, written without IN lists (issue 19). SQLite
-- tests `x IN ('a','b','c')` with three or more constants by building a
-- temporary B-tree of the list every time the constraint is checked: each
-- INSERT of a run, step or log line and each UPDATE of a run's status opened,
-- filled and closed one (a plain loop of one-row inserts into a two-column
-- table: 1.88 µs a row with the IN list, 0.53 with the same test as a chain
-- of `=`, 0.50 with no CHECK). A chain of `=` is checked in place. Same
-- constraints, so every stored row satisfies them.
--
-- Only the CREATE TABLE text in sqlite_master changes (SQLite's documented
-- procedure for changing a CHECK: writable_schema, then a new schema cookie,
-- which migrate.rs sets after this file so that every connection, in this
-- process or another, parses the schema again). No row is copied or moved.
PRAGMA writable_schema = ON;

UPDATE sqlite_master SET sql = replace(sql,
  'CHECK (status IN (''pending'',''running'',''completed'',''failed'',''cancelled''))',
  'CHECK (status = ''pending'' OR status = ''running'' OR status = ''completed'' OR status = ''failed'' OR status = ''cancelled'')')
  WHERE type = 'table' AND name = 'runs';

UPDATE sqlite_master SET sql = replace(sql,
  'CHECK (status IN (''completed'',''failed'',''cancelled''))',
  'CHECK (status = ''completed'' OR status = ''failed'' OR status = ''cancelled'')')
  WHERE type = 'table' AND name = 'steps';

UPDATE sqlite_master SET sql = replace(sql,
  'CHECK (level IN (''info'',''warn'',''error''))',
  'CHECK (level = ''info'' OR level = ''warn'' OR level = ''error'')')
  WHERE type = 'table' AND name = 'logs';

PRAGMA writable_schema = OFF;
