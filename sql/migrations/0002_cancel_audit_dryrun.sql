-- opsrunner schema v2: cancellation reasons, dry runs, the append-only audit log.

ALTER TABLE ops_jobs
    ADD COLUMN cancel_reason text CHECK (char_length(cancel_reason) <= 500),
    -- Validate and record, but run no side effect.
    ADD COLUMN dry_run boolean NOT NULL DEFAULT false;

-- Who changed what, and why. Append-only: UPDATE, DELETE and TRUNCATE are
-- refused by triggers (retention pruning will get its own, audited path).
CREATE TABLE ops_audit_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL CHECK (char_length(actor) <= 200),
    action text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    target text CHECK (char_length(target) <= 200),
    detail jsonb CHECK (detail IS NULL OR octet_length(detail::text) <= 10240)
);
CREATE INDEX ops_audit_log_at_idx ON ops_audit_log (at);

CREATE FUNCTION ops_audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ops_audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER ops_audit_log_no_update BEFORE UPDATE OR DELETE ON ops_audit_log
    FOR EACH ROW EXECUTE FUNCTION ops_audit_log_refuse_change();
CREATE TRIGGER ops_audit_log_no_truncate BEFORE TRUNCATE ON ops_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ops_audit_log_refuse_change();

-- Transition events now say why a job was cancelled and mark dry runs.
CREATE OR REPLACE FUNCTION ops_jobs_log_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ops_job_events (job_id, from_status, to_status, attempt, worker, detail)
    SELECT n.id, o.status, n.status, n.attempt, n.lease_owner,
           CASE
               WHEN n.status IN ('failed', 'queued', 'cancelled') THEN left(n.error, 500)
               WHEN n.dry_run AND n.status = 'succeeded' THEN 'dry run: validated, nothing executed'
           END
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status;
    RETURN NULL;
END $$;
