-- Key tables and the append-only, HMAC-chained audit log.

-- Per-user key material, wrapped by a root key-encryption key (provider key id + version).
CREATE TABLE user_keys (
    owner_id        text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    root_key_id     text NOT NULL,
    wrapped_key     bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rewrapped_at    timestamptz,
    shredded_at     timestamptz,
    PRIMARY KEY (owner_id, version),
    CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);
CREATE INDEX user_keys_root_idx ON user_keys (root_key_id) WHERE wrapped_key IS NOT NULL;

-- Public halves of the workers' X25519 sealing keys: producers seal imported states to them.
CREATE TABLE seal_keys (
    key_id      text PRIMARY KEY,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    text NOT NULL,
    action      text NOT NULL,
    session_id  text,
    task_id     text,
    request_id  text,
    result      text NOT NULL CHECK (result IN ('ok', 'denied', 'error')),
    detail      text,
    key_id      text NOT NULL,
    prev_hash   bytea NOT NULL,
    row_hash    bytea NOT NULL
);
CREATE INDEX audit_log_session_idx ON audit_log (session_id, id);

-- The chain head: lets `audit verify` notice rows removed from the end.
CREATE TABLE audit_head (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id     bigint NOT NULL,
    last_hash   bytea NOT NULL
);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
