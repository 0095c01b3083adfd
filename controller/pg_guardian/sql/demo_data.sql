-- Real-looking rows: names that naive patterns flag (Testa, Tester, Dummett, Sample, Celeste).
INSERT INTO dental.clinics (id, name, email, phone) VALUES
    ('7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', 'Greatest Smiles Dental', 'front@greatestsmiles.com', '+1 415 872 1930'),
    ('0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62', 'Harbour Family Dentistry', 'hello@harbourdentistry.co.uk', '+44 20 7946 1234');

INSERT INTO dental.patients (clinic_id, first_name, last_name, email, phone, date_of_birth, allergies, preferences, balance) VALUES
    ('7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', 'Celeste', 'Testa', 'celeste.testa@gmail.com', '+1 415 872 4410', '1984-03-02', '{latex}', '{"reminders": "sms"}', 120.50),
    ('7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', 'Martin', 'Tester', 'mtester@outlook.com', '+1 628 555 8123', '1979-11-23', '{}', '{}', 0),
    ('0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62', 'Oliver', 'Dummett', 'oliver.dummett@btinternet.com', '+44 20 7946 5678', '1991-07-14', '{penicillin}', '{"language": "en"}', 35.00),
    ('0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62', 'Grace', 'Sample', 'grace.sample@yahoo.co.uk', '+44 7700 183 456', '2001-01-30', '{}', '{}', 0);
