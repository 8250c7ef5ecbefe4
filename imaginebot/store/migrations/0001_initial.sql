-- The initial schema, shared by SQLite and PostgreSQL.
-- The dollar-brace placeholders stand for the few types the two spell differently (see type_names in
-- store/sqlite.py and store/postgres.py). Every statement ends with ';' at the end of a line.
-- Credits are integer hundredths of a credit; times are UTC.

CREATE TABLE jobs (
    id ${id_pk},
    guild_id BIGINT NOT NULL,
    channel_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    application_id BIGINT NOT NULL,
    interaction_id BIGINT NOT NULL,
    interaction_token TEXT NOT NULL,
    token_expires_at ${timestamp} NOT NULL,
    options TEXT NOT NULL,
    cost BIGINT NOT NULL CHECK (cost >= 0),
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'running', 'delivered', 'failed', 'interrupted', 'cancelled')),
    created_at ${timestamp} NOT NULL,
    started_at ${timestamp},
    finished_at ${timestamp},
    error TEXT,
    reported_credits ${decimal},
    generator_record_id TEXT,
    result_channel_id BIGINT,
    result_message_id BIGINT,
    status_message_id BIGINT
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_member ON jobs (guild_id, user_id, created_at);

-- Every change of credits; usage is always a sum over these rows.
CREATE TABLE ledger (
    id ${id_pk},
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    job_id BIGINT REFERENCES jobs (id),
    amount BIGINT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('reserve', 'refund', 'reset')),
    charged_at ${timestamp} NOT NULL,
    created_at ${timestamp} NOT NULL,
    actor_id BIGINT
);
CREATE INDEX ledger_member_time ON ledger (guild_id, user_id, charged_at);
CREATE INDEX ledger_guild_time ON ledger (guild_id, charged_at);
CREATE INDEX ledger_time ON ledger (charged_at);
CREATE INDEX ledger_job ON ledger (job_id);

CREATE TABLE member_limits (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits >= 0),
    period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE role_limits (
    guild_id BIGINT NOT NULL,
    role_id BIGINT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits >= 0),
    period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE exempt_roles (
    guild_id BIGINT NOT NULL,
    role_id BIGINT NOT NULL,
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE guild_settings (
    guild_id BIGINT PRIMARY KEY,
    default_limit_credits BIGINT CHECK (default_limit_credits >= 0),
    default_limit_period TEXT CHECK (default_limit_period IN ('day', 'week', 'month')),
    budget_credits BIGINT CHECK (budget_credits >= 0),
    budget_period TEXT CHECK (budget_period IN ('day', 'week', 'month')),
    default_size TEXT,
    default_quality TEXT,
    default_count INTEGER,
    default_format TEXT,
    max_count INTEGER,
    mod_role_id BIGINT,
    log_channel_id BIGINT,
    blocked_words TEXT NOT NULL DEFAULT '[]',
    CHECK ((default_limit_credits IS NULL) = (default_limit_period IS NULL)),
    CHECK ((budget_credits IS NULL) = (budget_period IS NULL))
);

CREATE TABLE audit_log (
    id ${id_pk},
    guild_id BIGINT NOT NULL,
    actor_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    "before" TEXT,
    "after" TEXT,
    at ${timestamp} NOT NULL
);
CREATE INDEX audit_log_guild ON audit_log (guild_id, id);

CREATE TABLE bot_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
