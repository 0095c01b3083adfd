-- Compile the installed rules into the write-path prefilters.
SELECT guardian._compile_rules();
