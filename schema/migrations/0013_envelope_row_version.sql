-- Saved states are bound to their row's version (envelope format 2). For that to stop a
-- rollback (an older ciphertext of the same session copied back over a newer one), the
-- version may never go down, and a row may not go back to an older envelope format (format
-- 1 lacks the version binding). Format 1 rows still decrypt and become format 2 on their
-- next save.

CREATE FUNCTION browser_sessions_no_rollback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version < OLD.version THEN
        RAISE EXCEPTION 'session %: version % cannot go back to %', OLD.id, OLD.version,
            NEW.version USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.enc_format < OLD.enc_format THEN
        RAISE EXCEPTION 'session %: envelope format % cannot go back to %', OLD.id,
            OLD.enc_format, NEW.enc_format USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER browser_sessions_no_rollback
    BEFORE UPDATE ON browser_sessions
    FOR EACH ROW EXECUTE FUNCTION browser_sessions_no_rollback();
