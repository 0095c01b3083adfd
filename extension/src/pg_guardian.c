/*
 * pg_guardian.c: the library's entry point. Each SQL-callable function lives with its job:
 *
 *   SQL function                             C symbol                      file
 *   guardian._contains_any(text, text[])     pg_guardian_contains_any      matchers.c
 *   guardian._uuid_matches(uuid, uuid[])     pg_guardian_uuid_matches      matchers.c
 *   guardian._suspect(record [, record])     pg_guardian_suspect           prefilter.c
 *   guardian._suspect_columns(regclass, ...) pg_guardian_suspect_columns   prefilter.c
 *   guardian._activity_start()               pg_guardian_activity_start    activity.c
 *   guardian._activity_end()                 pg_guardian_activity_end      activity.c
 *
 * The needle search they share is needles.c, which does not depend on the server, so that
 * tests/c_harness can build it with sanitizers outside a backend. Any role may call these
 * functions (the WHEN clauses run as whoever writes), so each one answers NULLs and inputs of
 * the wrong kind with a defined result or a clean ERROR. Where the library cannot be loaded,
 * the extension defines the same functions in SQL (sql/20_contamination/00_matchers.sql,
 * sql/21_activity/10_activity.sql).
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "fmgr.h"
#include "utils/formatting.h"

#include "pg_guardian.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* lower() of UTF-8 text, as the precise rules have it (guardian._normalize: the default collation). */
static char *
server_lower(const char *s, int len)
{
	return str_tolower(s, len, DEFAULT_COLLATION_OID);
}

void
_PG_init(void)
{
	needles_lower = server_lower;
}
