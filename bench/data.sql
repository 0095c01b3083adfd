-- Realistic patient rows for the contamination benchmarks: common first and last names
-- (Testa, Tester, Dummett, Sample and Celeste among them, as in real data), addresses at
-- common providers, real-looking clinics and random phone numbers. :rows rows in bench_src.
DROP TABLE IF EXISTS bench_src;
CREATE TABLE bench_src AS
SELECT gen_random_uuid() AS id,
       (ARRAY['Olivia','Liam','Emma','Noah','Ava','Celeste','Martin','Grace','Oliver','Sofia','James','Isabella',
              'Lucas','Mia','Amelia','Ethan','Harper','Mateo','Aria','Henry','Chloe','Jack','Zoe','Leo','Nora',
              'Samuel','Hannah','Daniel','Priya','Wei','Fatima','Jonas','Ingrid','Kenji','Aisha','Diego','Elena',
              'Marco','Chiara','Tomasz','Ana','Yusuf','Freya','Hugo','Lena','Ravi','Sara','Omar','Julia','Theo'])[1 + (random() * 49)::int] AS first_name,
       (ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
              'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
              'Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker',
              'Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores','Green','Adams','Nelson',
              'Baker','Hall','Rivera','Campbell','Mitchell','Carter','Roberts','Kowalczyk','Okafor','Müller',
              'Testa','Tester','Dummett','Sample','Celestino','Contessa','Attestor'])[1 + (random() * 59)::int] AS last_name,
       lower('p' || (random() * 1e9)::bigint) || '@' ||
       (ARRAY['gmail.com','outlook.com','yahoo.co.uk','icloud.com','hotmail.com','proton.me','btinternet.com','web.de'])[1 + (random() * 7)::int] AS email,
       (ARRAY['Greatest Smiles Dental','Harbour Family Dentistry','Bright Teeth Clinic','Riverside Dental Care',
              'Oak Street Orthodontics','Sunrise Dental Studio','Northgate Dental Practice','Testament Dental Group'])[1 + (random() * 7)::int] AS clinic,
       -- area codes 200..554: 555 is not assigned, and numbers in it are fiction
       '+1 ' || (200 + (random() * 354)::int) || ' ' || (200 + (random() * 799)::int) || ' ' || lpad((random() * 9999)::int::text, 4, '0') AS phone
  FROM generate_series(1, :rows);
