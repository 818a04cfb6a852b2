-- Sessions that stay alive: versions, leases, health probes, notifications, expiring soon.

ALTER TABLE browser_sessions
    -- NULL: not yet known (jobs run one at a time until a write-back tells); true once a
    -- job saw the site replace a restored value.
    ADD COLUMN rotating           boolean,
    ADD COLUMN lease_mode         text NOT NULL DEFAULT 'auto'
                                  CHECK (lease_mode IN ('auto', 'exclusive', 'parallel')),
    -- The earliest expiry of the auth cookies, learned at every save.
    ADD COLUMN expires_at         timestamptz,
    ADD COLUMN next_probe_at      timestamptz,
    ADD COLUMN last_probe_at      timestamptz,
    ADD COLUMN last_probe_verdict text,
    ADD COLUMN probe_failures     integer NOT NULL DEFAULT 0;
CREATE INDEX browser_sessions_probe_due_idx ON browser_sessions (next_probe_at)
    WHERE status = 'active';

-- The last N encrypted versions of each session (the current one included).
CREATE TABLE session_versions (
    session_id      text NOT NULL REFERENCES browser_sessions (id) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version >= 1),
    source          text NOT NULL
                    CHECK (source IN ('capture', 'import', 'write_back', 'probe', 'rollback')),
    source_id       text,
    verdict         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    enc_format      smallint NOT NULL,
    enc_key_version integer NOT NULL,
    enc_wrapped_key bytea,
    enc_nonce       bytea NOT NULL,
    enc_ciphertext  bytea NOT NULL,
    PRIMARY KEY (session_id, version)
);

-- One holder at a time for sessions whose site rotates its tokens; the deadline frees a
-- lease whose holder died.
CREATE TABLE session_leases (
    session_id  text PRIMARY KEY REFERENCES browser_sessions (id) ON DELETE CASCADE,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    deadline    timestamptz NOT NULL
);

-- An outbox the orchestrator reads (and marks delivered) for news that has no task.
CREATE TABLE session_notifications (
    id           bigserial PRIMARY KEY,
    user_id      text NOT NULL,
    session_id   text REFERENCES browser_sessions (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('expired', 'expiring_soon')),
    message      text NOT NULL,
    dedupe_key   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX session_notifications_pending_idx ON session_notifications (user_id, id)
    WHERE delivered_at IS NULL;

-- Every ciphertext of a session, current and past, in one place: revoke, shred and delete
-- all end here (delete through the foreign key's cascade). SECURITY DEFINER so the
-- orchestrator role can wipe what it can never read.
CREATE FUNCTION wipe_session_ciphertext(p_session_id text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    wiped integer;
BEGIN
    DELETE FROM session_versions WHERE session_id = p_session_id;
    GET DIAGNOSTICS wiped = ROW_COUNT;
    UPDATE browser_sessions
       SET enc_format = NULL, enc_key_version = NULL, enc_wrapped_key = NULL,
           enc_nonce = NULL, enc_ciphertext = NULL
     WHERE id = p_session_id AND status <> 'active' AND enc_ciphertext IS NOT NULL;
    RETURN wiped;
END;
$$;

CREATE FUNCTION browser_sessions_wipe_on_revoke() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wipe_session_ciphertext(NEW.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER browser_sessions_revoked_wipe
    AFTER UPDATE OF status ON browser_sessions
    FOR EACH ROW WHEN (NEW.status = 'revoked' AND OLD.status IS DISTINCT FROM 'revoked')
    EXECUTE FUNCTION browser_sessions_wipe_on_revoke();

REVOKE ALL ON FUNCTION wipe_session_ciphertext(text) FROM PUBLIC;
DO $$
BEGIN
    -- The trigger runs the wipe as whoever revokes: both application roles.
    GRANT EXECUTE ON FUNCTION wipe_session_ciphertext(text)
        TO browser_sessions_orchestrator, browser_sessions_worker;
END
$$;

-- Orchestrator: metadata of the new columns and tables, never their ciphertext.
GRANT SELECT (rotating, lease_mode, expires_at, next_probe_at, last_probe_at,
              last_probe_verdict, probe_failures)
    ON browser_sessions TO browser_sessions_orchestrator;
GRANT UPDATE (lease_mode) ON browser_sessions TO browser_sessions_orchestrator;
GRANT SELECT (session_id, version, source, source_id, verdict, created_at)
    ON session_versions TO browser_sessions_orchestrator;
GRANT SELECT, UPDATE (delivered_at) ON session_notifications TO browser_sessions_orchestrator;
GRANT SELECT ON session_leases TO browser_sessions_orchestrator;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON session_versions, session_leases, session_notifications TO browser_sessions_worker;
GRANT USAGE ON SEQUENCE session_notifications_id_seq TO browser_sessions_worker;
