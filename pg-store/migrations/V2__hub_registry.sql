-- The OEM hub's store on PostgreSQL (issue 14), schema version 2: the
-- mirror of every site's ledger, the witness state, forks and the registry
-- across sites. One table per table of the embedded store (hub/src/
-- embedded.rs), with the same key as its primary key. Every write of the
-- hub is one transaction.

CREATE TABLE hub_sites (
    site text PRIMARY KEY,
    size bigint NOT NULL CHECK (size >= 0),
    head bytea NOT NULL CHECK (length(head) = 32),
    last_time_ms bigint NOT NULL,
    forks bigint NOT NULL DEFAULT 0,
    cosigned_size bigint,
    cosigned_root bytea CHECK (length(cosigned_root) = 32),
    cosigned_time bigint,
    cosigned_note text,
    CHECK ((cosigned_size IS NULL) = (cosigned_note IS NULL))
);

CREATE TABLE hub_entries (
    site text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    entry bytea NOT NULL,
    PRIMARY KEY (site, seq)
);

-- Level 0: each entry's leaf hash.
CREATE TABLE hub_nodes (
    site text NOT NULL,
    level smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx bigint NOT NULL,
    hash bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (site, level, idx)
);

CREATE TABLE hub_device_heads (
    site text NOT NULL,
    rot_id text NOT NULL,
    leaf bytea NOT NULL CHECK (length(leaf) = 32),
    PRIMARY KEY (site, rot_id)
);

-- Each site's unique keys: one holder per key per site (the site's own
-- invariant 2, re-checked by the hub).
CREATE TABLE hub_keys (
    site text NOT NULL,
    key bytea NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (site, key)
);

CREATE TABLE hub_quotas (
    site text NOT NULL,
    counter text NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (site, counter)
);

CREATE TABLE hub_devices (
    rot_id text NOT NULL,
    site text NOT NULL,
    serial text NOT NULL,
    order_id text NOT NULL,
    state smallint NOT NULL,
    certified_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    certificate bytea NOT NULL,
    device_key_sha256 bytea NOT NULL CHECK (length(device_key_sha256) = 32),
    cross_site_clone boolean NOT NULL,
    PRIMARY KEY (rot_id, site)
);
CREATE INDEX hub_devices_by_serial ON hub_devices (serial, site) WHERE serial <> '';

-- Who holds each identity (serial, rot_id, device key hash), per site.
CREATE TABLE hub_identities (
    kind smallint NOT NULL CHECK (kind BETWEEN 1 AND 3),
    value bytea NOT NULL,
    site text NOT NULL,
    seq bigint NOT NULL,
    rot_id text NOT NULL,
    serial text NOT NULL,
    PRIMARY KEY (kind, value, site)
);

-- Cross-site uniqueness as a constraint: the first site to certify an
-- identity owns this row. A second site's insert waits for the first's
-- transaction and then conflicts, so two hub replicas ingesting two sites
-- at once cannot both miss the clone.
CREATE TABLE hub_identity_owners (
    kind smallint NOT NULL,
    value bytea NOT NULL,
    site text NOT NULL,
    PRIMARY KEY (kind, value)
);

CREATE TABLE hub_clones (
    kind smallint NOT NULL,
    value bytea NOT NULL,
    detected_ms bigint NOT NULL,
    PRIMARY KEY (kind, value)
);

CREATE TABLE hub_orders (
    order_id text NOT NULL,
    site text NOT NULL,
    opened boolean NOT NULL,
    opened_seq bigint NOT NULL,
    quantity bigint NOT NULL,
    allocation bigint NOT NULL,
    terms_sha256 bytea NOT NULL CHECK (length(terms_sha256) = 32),
    certified bigint NOT NULL,
    scrapped bigint NOT NULL,
    PRIMARY KEY (order_id, site)
);

CREATE TABLE hub_site_counts (
    site text PRIMARY KEY,
    certified bigint NOT NULL,
    shipped bigint NOT NULL,
    received bigint NOT NULL,
    scrapped bigint NOT NULL
);

-- Fork evidence; the same fork offered again (same digest of site, kind,
-- position and offered hash) only counts a repeat.
CREATE TABLE hub_forks (
    id bigserial PRIMARY KEY,
    digest bytea NOT NULL UNIQUE,
    site text NOT NULL,
    kind smallint NOT NULL,
    position bigint NOT NULL,
    held_hash bytea NOT NULL,
    offered_hash bytea NOT NULL,
    held_entry bytea NOT NULL,
    offered_entry bytea NOT NULL,
    held_note text NOT NULL,
    offered_note text NOT NULL,
    reason text NOT NULL,
    time_ms bigint NOT NULL,
    repeats bigint NOT NULL
);
