-- Revocation is final and leaves nothing to decrypt. A trigger (it binds every role,
-- including the orchestrator's and the workers') wipes the encrypted columns whenever a row
-- is or becomes revoked, and refuses any change of status out of 'revoked'. The encrypted
-- columns are the only ciphertext of a session the database holds (captures and results
-- hold none; an imported state travels sealed in its message only).

CREATE FUNCTION browser_sessions_revocation_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = 'revoked' AND NEW.status IS DISTINCT FROM 'revoked' THEN
        RAISE EXCEPTION 'session % is revoked: a revocation cannot be undone', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status = 'revoked' THEN
        NEW.enc_format := NULL;
        NEW.enc_key_version := NULL;
        NEW.enc_wrapped_key := NULL;
        NEW.enc_nonce := NULL;
        NEW.enc_ciphertext := NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- Rows revoked before this migration lose their ciphertext now.
UPDATE browser_sessions
SET enc_format = NULL, enc_key_version = NULL, enc_wrapped_key = NULL, enc_nonce = NULL,
    enc_ciphertext = NULL
WHERE status = 'revoked' AND enc_ciphertext IS NOT NULL;

CREATE TRIGGER browser_sessions_revocation_final
    BEFORE INSERT OR UPDATE ON browser_sessions
    FOR EACH ROW EXECUTE FUNCTION browser_sessions_revocation_final();

ALTER TABLE browser_sessions
    ADD CONSTRAINT browser_sessions_revoked_has_no_ciphertext
    CHECK (status <> 'revoked' OR enc_ciphertext IS NULL);
