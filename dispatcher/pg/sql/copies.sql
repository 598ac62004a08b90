-- The rows of a run's queries, kept in the journal's database for its resume (dispatcher/jobs/query.py).
-- The table is made by the first run that keeps a copy, not by a migration: a journal that names no
-- query never has it.

-- make --
CREATE TABLE IF NOT EXISTS dispatcher.query_copies (journal text NOT NULL, key text NOT NULL,
part integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (journal, key, part))

-- made --
SELECT to_regclass('dispatcher.query_copies')

-- clear --
DELETE FROM dispatcher.query_copies WHERE journal = %s

-- count --
SELECT count(*) FROM dispatcher.query_copies WHERE journal = %s AND key = %s

-- parts --
SELECT data FROM dispatcher.query_copies WHERE journal = %s AND key = %s ORDER BY part

-- drop --
DELETE FROM dispatcher.query_copies WHERE journal = %s AND key = %s

-- insert --
INSERT INTO dispatcher.query_copies (journal, key, part, data) VALUES (%s, %s, %s, %s)
