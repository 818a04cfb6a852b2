-- Audit rows are appended only through audit_append(), a SECURITY DEFINER function that
-- computes the chain: it takes the chain lock, refuses a row that does not build on the
-- current head, picks the id and time, computes the row hash and moves the head. The
-- application roles may only EXECUTE it: they lose INSERT on audit_log and INSERT/UPDATE
-- on audit_head. Each row carries the Ed25519 signature of its writer side (producers or
-- workers) over its fields, the chain id and the previous row's hash, so neither side can
-- write rows in the other's name and nobody without a key can re-link the chain.

-- One random id per chain: checkpoints kept outside the database name it, and every row
-- signature covers it.
CREATE TABLE audit_chain (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    chain_id    text NOT NULL
);
INSERT INTO audit_chain (chain_id) VALUES (gen_random_uuid()::text);

ALTER TABLE audit_log ADD COLUMN signature bytea;

CREATE FUNCTION audit_append(
    p_prev bytea,
    p_actor_id text,
    p_action text,
    p_session_id text,
    p_task_id text,
    p_request_id text,
    p_result text,
    p_detail text,
    p_key_id text,
    p_signature bytea
) RETURNS TABLE (out_id bigint, out_at timestamptz, out_row_hash bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_last bytea;
    v_id bigint;
    v_at timestamptz;
    v_hash bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(7094118710224644468);  -- "bs_audit"
    SELECT h.last_hash INTO v_last FROM public.audit_head h WHERE h.singleton;
    v_last := coalesce(v_last, decode(repeat('00', 32), 'hex'));
    IF p_prev IS DISTINCT FROM v_last THEN
        RAISE EXCEPTION 'audit_append: the row does not build on the chain head'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF p_signature IS NULL OR octet_length(p_signature) <> 64 THEN
        RAISE EXCEPTION 'audit_append: a 64-byte signature is required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_key_id IS NULL OR p_key_id !~ '^ed25519:(producers|workers):[0-9a-f]{16}$' THEN
        RAISE EXCEPTION 'audit_append: unknown key id format'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_id := nextval('public.audit_log_id_seq');
    v_at := clock_timestamp();
    v_hash := sha256(
        convert_to('browser-sessions/audit-row/v2', 'UTF8') || '\x00'::bytea || v_last
        || int8send(v_id) || int8send((extract(epoch FROM v_at) * 1000000)::bigint)
        || p_signature
    );
    INSERT INTO public.audit_log (id, at, actor_id, action, session_id, task_id, request_id,
                                  result, detail, key_id, prev_hash, row_hash, signature)
    VALUES (v_id, v_at, p_actor_id, p_action, p_session_id, p_task_id, p_request_id,
            p_result, p_detail, p_key_id, v_last, v_hash, p_signature);
    INSERT INTO public.audit_head (singleton, last_id, last_hash, head_mac)
    VALUES (true, v_id, v_hash, NULL)
    ON CONFLICT (singleton) DO UPDATE
    SET last_id = EXCLUDED.last_id, last_hash = EXCLUDED.last_hash, head_mac = NULL;
    RETURN QUERY SELECT v_id, v_at, v_hash;
END;
$$;

REVOKE ALL ON FUNCTION audit_append(bytea, text, text, text, text, text, text, text, text, bytea)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(bytea, text, text, text, text, text, text, text, text, bytea)
    TO browser_sessions_orchestrator, browser_sessions_worker;

REVOKE INSERT ON audit_log FROM browser_sessions_orchestrator, browser_sessions_worker;
REVOKE INSERT, UPDATE ON audit_head FROM browser_sessions_orchestrator, browser_sessions_worker;
REVOKE USAGE ON SEQUENCE audit_log_id_seq
    FROM browser_sessions_orchestrator, browser_sessions_worker;
GRANT SELECT ON audit_chain TO browser_sessions_orchestrator, browser_sessions_worker;
