"""Formatting-only differences, decided with pglast (no database needed)."""

from __future__ import annotations

import pytest
from pg_guardian.drift import normalize

BODY = """
DECLARE
    v_total numeric;
BEGIN
    SELECT sum(amount) INTO v_total FROM public.invoices WHERE tenant = p_tenant;
    IF v_total > 1000 THEN
        RAISE NOTICE 'big tenant %', p_tenant;
    END IF;
    RETURN v_total;
END
"""

REFORMATTED = """
declare
    v_total numeric;   -- running total
begin
    /* one query */
    select sum(amount)
      into v_total
      from public.invoices
     where tenant = p_tenant;
    if v_total > 1000 then raise notice 'big tenant %', p_tenant; end if;
    return v_total;
end
"""


def plpgsql(body: str) -> str:
    return normalize.plpgsql(body, "p_tenant integer", "numeric")


def test_reformatted_plpgsql_body_is_formatting_only() -> None:
    assert plpgsql(BODY) == plpgsql(REFORMATTED)


@pytest.mark.parametrize(
    "change",
    [
        ("'big tenant %'", "'Big tenant %'"),
        ("v_total > 1000", "v_total >= 1000"),
        ("RETURN v_total;", "RETURN v_total + 1;"),
    ],
)
def test_a_real_change_in_plpgsql_is_not_formatting(change: tuple[str, str]) -> None:
    assert plpgsql(BODY) != plpgsql(BODY.replace(*change))


def test_sql_ignores_case_comments_whitespace_and_redundant_parentheses() -> None:
    assert normalize.sql("SELECT (sum(balance) + 0) FROM accounts -- total") == normalize.sql(
        "select sum(balance)+0\n  from accounts"
    )
    assert normalize.sql("SELECT 'Keep'") != normalize.sql("SELECT 'keep'")
    assert normalize.sql('SELECT "Name" FROM t') != normalize.sql("SELECT name FROM t")


def test_policy_expressions_compare_as_expressions() -> None:
    assert normalize.expression("((owner = CURRENT_USER))") == normalize.expression("owner = current_user")


def test_unparsable_text_compares_by_tokens() -> None:
    assert normalize.sql("SELEC broken  -- x\n thing") == normalize.sql("selec BROKEN thing")
    assert normalize.plpgsql("BEGIN RETURN (; END", "", "int") == normalize.plpgsql("begin return (; end", "", "int")


def test_only_author_formatted_attributes_can_be_cosmetic() -> None:
    sql_fn = {"language": "sql", "body": "SELECT 1", "volatility": "stable"}
    other = {"language": "sql", "body": "select   1", "volatility": "volatile"}
    assert normalize.formatting_only("function", "body", sql_fn, other)
    assert not normalize.formatting_only("function", "volatility", sql_fn, other)
    python_fn = {"language": "plpython3u", "body": "return 1"}
    assert not normalize.formatting_only("function", "body", python_fn, {**python_fn, "body": "return  1"})
    assert normalize.formatting_only(
        "view",
        "definition",
        {"definition": " SELECT a\n FROM t;"},
        {"definition": "select a from t"},
    )
    assert not normalize.formatting_only(
        "constraint",
        "definition",
        {"definition": "CHECK (a > 0)"},
        {"definition": "CHECK ((a > 0))"},
    )
