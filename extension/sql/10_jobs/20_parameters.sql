-- Thresholds of every check and retention rule are named parameters with a default and a
-- sane range. Overrides live in guardian.settings (per environment, '*' for all), so they
-- survive pg_dump; guardian.set_param() refuses nonsense before it is stored, and
-- guardian.param() refuses it again if someone wrote the settings table by hand.
CREATE TABLE guardian.parameters (
    name          text PRIMARY KEY,
    default_value numeric NOT NULL,
    min_value     numeric NOT NULL,
    max_value     numeric NOT NULL,
    unit          text NOT NULL,
    description   text NOT NULL,
    not_above     text,
    CONSTRAINT parameters_name_chk CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$'),
    CONSTRAINT parameters_range_chk CHECK (min_value <= default_value AND default_value <= max_value)
);
COMMENT ON TABLE guardian.parameters IS
    'Every tunable threshold: default, allowed range, unit; not_above names a parameter this one may not exceed (warning <= critical). Override with guardian.set_param().';

CREATE FUNCTION guardian.param(p_name text)
RETURNS numeric
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_param guardian.parameters;
    v_raw   jsonb;
    v_value numeric;
BEGIN
    SELECT * INTO v_param FROM guardian.parameters AS p WHERE p.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian parameter %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List parameters with: SELECT name, value, unit FROM guardian.parameter_values;';
    END IF;
    v_raw := guardian.setting(p_name);
    IF v_raw IS NULL OR v_raw = 'null'::jsonb THEN
        RETURN v_param.default_value;
    END IF;
    BEGIN
        v_value := (v_raw #>> '{}')::numeric;
    EXCEPTION WHEN invalid_text_representation THEN
        v_value := NULL;
    END;
    IF v_value IS NULL OR v_value NOT BETWEEN v_param.min_value AND v_param.max_value THEN
        RAISE EXCEPTION 'invalid value % for guardian parameter %', v_raw::text, p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Expected a number (%s) from %s to %s; guardian.settings holds %s.',
                                  v_param.unit, v_param.min_value, v_param.max_value, v_raw::text),
                  HINT = format('Fix it with: SELECT guardian.set_param(%L, %s);', p_name, v_param.default_value);
    END IF;
    RETURN v_value;
END
$$;
COMMENT ON FUNCTION guardian.param(text) IS
    'The value of a guardian parameter in this environment (setting, else default); an out-of-range stored value is an error naming the fix.';

CREATE FUNCTION guardian.set_param(p_name text, p_value numeric, p_environment text DEFAULT '*')
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_param guardian.parameters;
    v_other guardian.parameters;
BEGIN
    SELECT * INTO v_param FROM guardian.parameters AS p WHERE p.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian parameter %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List parameters with: SELECT name, value, unit FROM guardian.parameter_values;';
    END IF;
    IF p_environment IS NULL OR (p_environment <> '*' AND p_environment !~ '^[a-z][a-z0-9_-]{0,62}$') THEN
        RAISE EXCEPTION 'invalid environment % for guardian parameter %', coalesce(quote_literal(p_environment), 'NULL'), p_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''*'' for every environment, or an environment name such as production.';
    END IF;
    IF p_value IS NULL THEN
        DELETE FROM guardian.settings AS s WHERE s.key = p_name AND s.environment = p_environment;
        RETURN guardian.param(p_name);
    END IF;
    IF p_value NOT BETWEEN v_param.min_value AND v_param.max_value THEN
        RAISE EXCEPTION 'value % is out of range for guardian parameter %', p_value, p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s: %s from %s to %s.', v_param.description, v_param.unit,
                                  v_param.min_value, v_param.max_value),
                  HINT = format('For example: SELECT guardian.set_param(%L, %s);', p_name, v_param.default_value);
    END IF;
    -- Warning thresholds may not be beyond critical ones (checked against the effective value).
    IF v_param.not_above IS NOT NULL AND p_value > guardian.param(v_param.not_above) THEN
        RAISE EXCEPTION 'value % for % is above % (%)', p_value, p_name, v_param.not_above,
                        guardian.param(v_param.not_above)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Raise %s first (SELECT guardian.set_param(%L, ...);), or choose a value up to %s.',
                                v_param.not_above, v_param.not_above, guardian.param(v_param.not_above));
    END IF;
    FOR v_other IN SELECT * FROM guardian.parameters AS p WHERE p.not_above = p_name LOOP
        IF guardian.param(v_other.name) > p_value THEN
            RAISE EXCEPTION 'value % for % is below % (%)', p_value, p_name, v_other.name,
                            guardian.param(v_other.name)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Lower %s first (SELECT guardian.set_param(%L, ...);), or choose a value of at least %s.',
                                    v_other.name, v_other.name, guardian.param(v_other.name));
        END IF;
    END LOOP;
    INSERT INTO guardian.settings AS s (environment, key, value)
    VALUES (p_environment, p_name, to_jsonb(p_value))
    ON CONFLICT (environment, key) DO UPDATE
       SET value = EXCLUDED.value, changed_at = now(), changed_by = SESSION_USER;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION guardian.set_param(text, numeric, text) IS
    'Set a guardian parameter for one environment (''*'': all), refusing values out of range or past their critical partner; NULL removes the override.';

CREATE VIEW guardian.parameter_values AS
SELECT p.name,
       coalesce((SELECT (s.value #>> '{}') FROM guardian.settings AS s
                  WHERE s.key = p.name AND s.environment IN (guardian.current_environment(), '*')
                  ORDER BY s.environment = '*' LIMIT 1),
                p.default_value::pg_catalog.text) AS value,
       p.default_value, p.min_value, p.max_value, p.unit, p.description,
       EXISTS (SELECT FROM guardian.settings AS s
                WHERE s.key = p.name AND s.environment IN (guardian.current_environment(), '*')) AS overridden
  FROM guardian.parameters AS p;
COMMENT ON VIEW guardian.parameter_values IS
    'Each guardian parameter with its value in this environment, default, range and unit.';
