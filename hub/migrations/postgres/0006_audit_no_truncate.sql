-- TRUNCATE bypasses row triggers: refuse it too, so emptying the log takes the same
-- deliberate step (disabling the triggers) as altering a row, and `audit verify` still
-- finds what was removed from a log whose head remains.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
