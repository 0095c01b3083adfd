-- Forecasts: readers may forecast any series and see whether disk space can be measured.
-- guardian.forecast() is SECURITY DEFINER (guardian_owner, 10_ownership.sql) and reads only
-- guardian.metric_samples. The disk probe (guardian._data_directory_space(), PL/Python where
-- available) runs as its caller and only guardian_owner may call it (20_grants.sql), through
-- the metrics_collect job and the disk_space_forecast check; guardian.install_disk_probe()
-- creates PL/Python code, so it only works for a superuser.
GRANT EXECUTE ON FUNCTION guardian.forecast(text, text, interval), guardian.disk_probe_available()
    TO guardian_reader;
