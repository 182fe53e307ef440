-- The head row's compare-and-swap done by the server (issue 14), so that
-- a batch's COMMIT can go out in one pipeline with it instead of after a
-- round trip to the client.
--
-- `ledger_advance` moves the head from (from_size, from_head) to the new
-- state, or raises SQLSTATE TL001 when the head is not there. The error
-- aborts the transaction, so a COMMIT already sent behind it rolls back:
-- nothing of a batch placed on a head that moved can commit.
--
-- The row is locked first and compared after: under READ COMMITTED a
-- `SELECT ... FOR UPDATE` that meets the row locked by a transaction in
-- flight waits for it and then returns the version it left, whereas an
-- `UPDATE ... WHERE size = ...` would judge its WHERE on the version in
-- its snapshot, from before that commit, and miss. So a batch placed after
-- one in flight lands exactly when that one committed as placed.
CREATE FUNCTION ledger_advance(
    from_size bigint,
    from_head bytea,
    to_size bigint,
    to_head bytea,
    to_time_ms bigint,
    to_frontier bytea
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    at_size bigint;
    at_head bytea;
BEGIN
    SELECT size, head INTO at_size, at_head FROM ledger_head WHERE id = 1 FOR UPDATE;
    IF at_size IS DISTINCT FROM from_size OR at_head IS DISTINCT FROM from_head THEN
        RAISE EXCEPTION 'the ledger head is at size %, not at size %', at_size, from_size
            USING ERRCODE = 'TL001';
    END IF;
    UPDATE ledger_head
       SET size = to_size, head = to_head, last_time_ms = to_time_ms, frontier = to_frontier
     WHERE id = 1;
END
$$;
