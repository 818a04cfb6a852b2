-- Two application roles. The orchestrator role (used by producers) can manage sessions and
-- read their metadata, but has no SELECT on the encrypted columns or key tables, so no
-- decryption path exists for it. Neither role can UPDATE or DELETE audit rows.

DO $$
BEGIN
    BEGIN
        CREATE ROLE browser_sessions_orchestrator LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE browser_sessions_worker LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO browser_sessions_orchestrator, browser_sessions_worker',
                   current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO browser_sessions_orchestrator, browser_sessions_worker;

-- Orchestrator: metadata only.
GRANT SELECT (id, owner_id, label, start_url, site, logged_in_selector, login_url_pattern,
              extra_origins, status, version, created_at, updated_at, saved_at, last_used_at,
              expired_at, revoked_at)
    ON browser_sessions TO browser_sessions_orchestrator;
GRANT INSERT (id, owner_id, label, start_url, site, logged_in_selector, login_url_pattern,
              extra_origins, status)
    ON browser_sessions TO browser_sessions_orchestrator;
GRANT UPDATE (status, updated_at, revoked_at) ON browser_sessions TO browser_sessions_orchestrator;
GRANT DELETE ON browser_sessions TO browser_sessions_orchestrator;
GRANT SELECT, INSERT, UPDATE ON captures TO browser_sessions_orchestrator;
GRANT SELECT, INSERT, UPDATE ON tasks TO browser_sessions_orchestrator;
GRANT SELECT, INSERT ON task_comments TO browser_sessions_orchestrator;
GRANT SELECT ON browse_results TO browser_sessions_orchestrator;
GRANT SELECT ON seal_keys TO browser_sessions_orchestrator;
GRANT SELECT, INSERT ON audit_log TO browser_sessions_orchestrator;
GRANT SELECT, INSERT, UPDATE ON audit_head TO browser_sessions_orchestrator;
GRANT USAGE ON SEQUENCE audit_log_id_seq, task_comments_id_seq TO browser_sessions_orchestrator;

-- Worker: everything it needs, but the audit log stays append-only.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON browser_sessions, captures, tasks, task_comments, browse_results, user_keys, seal_keys
    TO browser_sessions_worker;
GRANT SELECT, INSERT ON audit_log TO browser_sessions_worker;
GRANT SELECT, INSERT, UPDATE ON audit_head TO browser_sessions_worker;
GRANT USAGE ON SEQUENCE audit_log_id_seq, task_comments_id_seq TO browser_sessions_worker;
