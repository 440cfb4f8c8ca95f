-- The state store, version 1. Portable SQL (SQLite 3.35+, PostgreSQL 12+); each dialect
-- replaces @SERIAL@ with its auto-increasing integer primary key. Times are seconds since the
-- epoch (DOUBLE PRECISION); JSON is TEXT; booleans are INTEGER 0/1.

CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE inbox (
    id @SERIAL@,
    dedup_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    patient TEXT,
    state TEXT NOT NULL,
    body TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    done_at DOUBLE PRECISION
);
CREATE INDEX inbox_state_patient ON inbox (state, patient, id);

CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE outbox (
    id @SERIAL@,
    effect_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    patient TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    received_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    done_at DOUBLE PRECISION,
    result TEXT,
    holder TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX outbox_state_next ON outbox (state, next_at, id);
CREATE INDEX outbox_patient ON outbox (patient, state, id);

CREATE TABLE resources (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    patient TEXT,
    identifier TEXT,
    base_version TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (type, id)
);
CREATE INDEX resources_patient ON resources (patient);
CREATE INDEX resources_identifier ON resources (identifier);

CREATE TABLE patients (
    patient TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    recheck_due TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX patients_recheck ON patients (recheck_due);

CREATE TABLE watermarks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE audit (
    id @SERIAL@,
    patient TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    backend TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    mappings_version TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outcome TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX audit_patient ON audit (patient, id);
