-- Fewer rows per append (issue 14: the rows an append writes bound the
-- rate at which a PostgreSQL ledger takes appends).
--
-- Merkle subtrees of fewer than 16 leaves (levels 1 to 3) are no longer
-- stored: a proof that needs one hashes it from its leaves (at most eight,
-- in entries.leaf). That was seven stored rows in eight.
DELETE FROM merkle_nodes WHERE level < 4;
ALTER TABLE merkle_nodes DROP CONSTRAINT merkle_nodes_level_check;
ALTER TABLE merkle_nodes ADD CONSTRAINT merkle_nodes_level_check CHECK (level BETWEEN 4 AND 63);
