-- A small multi-tenant dental schema: the sample the demo and the tests guard.
CREATE SCHEMA dental;

CREATE TABLE dental.clinics (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    email      text,
    phone      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dental.patients (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    clinic_id     uuid NOT NULL REFERENCES dental.clinics (id) ON DELETE CASCADE,
    first_name    text NOT NULL,
    last_name     text NOT NULL,
    email         text,
    phone         text,
    date_of_birth date,
    allergies     text[] NOT NULL DEFAULT '{}',
    preferences   jsonb NOT NULL DEFAULT '{}',
    balance       numeric(12, 2) NOT NULL DEFAULT 0,
    xray          bytea,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_clinic_id_idx ON dental.patients (clinic_id);

CREATE TABLE dental.appointments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES dental.patients (id) ON DELETE CASCADE,
    clinic_id  uuid NOT NULL REFERENCES dental.clinics (id) ON DELETE RESTRICT,
    starts_at  timestamptz NOT NULL,
    duration   interval NOT NULL DEFAULT '30 minutes',
    procedure  text NOT NULL,
    notes      text
);
CREATE INDEX appointments_patient_id_idx ON dental.appointments (patient_id);

CREATE TABLE dental.invoices (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id     uuid NOT NULL REFERENCES dental.patients (id) ON DELETE CASCADE,
    appointment_id bigint REFERENCES dental.appointments (id) ON DELETE SET NULL,
    amount         numeric(12, 2) NOT NULL,
    line_items     jsonb NOT NULL DEFAULT '[]',
    issued_at      timestamptz NOT NULL DEFAULT now(),
    paid           boolean NOT NULL DEFAULT false
);
