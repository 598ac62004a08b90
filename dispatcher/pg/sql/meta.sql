-- The versions of the schema's components (migrate.py).

-- lock --
-- Taken in the transaction that makes or migrates the schema: one process at a time, of any version.
SELECT pg_advisory_xact_lock(hashtext('dispatcher schema'))

-- make_meta --
CREATE SCHEMA IF NOT EXISTS dispatcher;
CREATE TABLE IF NOT EXISTS dispatcher.meta (component text PRIMARY KEY, version integer NOT NULL)

-- has_meta --
SELECT to_regclass('dispatcher.meta') IS NOT NULL

-- versions --
SELECT component, version FROM dispatcher.meta

-- version_of --
SELECT version FROM dispatcher.meta WHERE component = %s

-- insert_version --
INSERT INTO dispatcher.meta (component, version) VALUES (%s, %s)

-- update_version --
UPDATE dispatcher.meta SET version = %s WHERE component = %s
