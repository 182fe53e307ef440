-- The custody ledger on PostgreSQL (issue 14), schema version 1.
--
-- Entries are the truth: their exact stored bytes, sequenced 0, 1, 2, ...
-- Everything else (leaf hashes, Merkle nodes, keys, quotas, the head row)
-- is written in the same transaction as the entries it derives from, so a
-- committed batch is whole or absent. `trustline ledger verify` recomputes
-- all of it from the entries and compares.

-- The checkpoint identity, set once by the first process that opens the
-- database (a second key is refused: KeyMismatch).
CREATE TABLE ledger_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    origin text NOT NULL,
    public_key_pem text NOT NULL
);

-- The single counter row: every append batch locks it first (so batches
-- from every replica take turns), assigns the range [size, size + n) and
-- updates it once.
CREATE TABLE ledger_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    size bigint NOT NULL CHECK (size >= 0),
    -- The hash-chain head after the last entry.
    head bytea NOT NULL CHECK (length(head) = 32),
    last_time_ms bigint NOT NULL,
    -- The Merkle frontier: the roots of the maximal complete subtrees of
    -- [0, size), largest first, 32 bytes each.
    frontier bytea NOT NULL
);
INSERT INTO ledger_head (id, size, head, last_time_ms, frontier)
VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0, '\x');

CREATE TABLE entries (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    -- The exact encoded trustline.v1.LedgerEntry.
    entry bytea NOT NULL,
    -- SHA-256(0x00 || entry): the Merkle leaf.
    leaf bytea NOT NULL CHECK (length(leaf) = 32),
    -- The device, for device histories and device_prev (2.4.14.12).
    rot_id text
);
CREATE INDEX entries_by_device ON entries (rot_id, seq) WHERE rot_id IS NOT NULL;

-- Complete, aligned Merkle subtrees above the leaves: (level, idx) covers
-- leaves [idx * 2^level, (idx + 1) * 2^level).
CREATE TABLE merkle_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Invariant 2 (2.4.14.4): at most one entry ever holds a key. The primary
-- key is the backstop behind the check made in the batch transaction.
CREATE TABLE unique_keys (
    namespace text NOT NULL,
    value bytea NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (namespace, value)
);

-- Invariant 4 (2.4.14.22): entries counted per quota counter, changed in
-- the transaction that appends them.
CREATE TABLE quotas (
    counter text PRIMARY KEY,
    used bigint NOT NULL CHECK (used >= 0)
);

-- Signed checkpoints. Two checkpoints of one size never differ (invariant
-- 5): one row per size. `position` is where the record stands among the
-- entries (the number of entries before it), so that an export lists
-- entries and checkpoints in the order a file ledger would.
CREATE TABLE checkpoints (
    size bigint PRIMARY KEY CHECK (size >= 0),
    root bytea NOT NULL CHECK (length(root) = 32),
    note text NOT NULL,
    position bigint NOT NULL CHECK (position >= size)
);

-- The lease that decides which replica signs checkpoints: held while
-- `expires_at` (database time) is in the future and renewed by its holder;
-- `epoch` grows with every change of holder.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL,
    epoch bigint NOT NULL
);
INSERT INTO leases (name, holder, expires_at, epoch) VALUES ('checkpoint-signer', '', '-infinity', 0);
