-- Schema version 4: the ledger's text keys compare as bytes.
--
-- Unique-key namespaces, device ids and quota counters are identifiers,
-- only ever compared for equality; a linguistic collation buys nothing
-- and costs a locale-aware comparison on every index probe and insertion
-- (about a fifth of a key insertion on the machine we measured). "C"
-- orders by bytes, on every server and version alike. The indexes are
-- rebuilt by the column changes.
ALTER TABLE unique_keys ALTER COLUMN namespace TYPE text COLLATE "C";
ALTER TABLE entries ALTER COLUMN rot_id TYPE text COLLATE "C";
ALTER TABLE quotas ALTER COLUMN counter TYPE text COLLATE "C";
