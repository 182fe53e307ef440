-- Schema version 3 (issues 13 and 14): what the embedded hub store gained
-- with ownership at the hub and the audit across sites.

-- Each device's entries at each site (the mirror's index for the hub's
-- Ownership service): one row per (site, rot_id, seq).
CREATE TABLE hub_device_entries (
    site text NOT NULL,
    rot_id text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (site, rot_id, seq)
);

-- Every checkpoint of a site the witness cosigned (the audit's outage
-- backlogs), by size; a size is cosigned once.
CREATE TABLE hub_cosignatures (
    site text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    time bigint NOT NULL,
    root bytea NOT NULL CHECK (length(root) = 32),
    PRIMARY KEY (site, size)
);
