/*
 * matchers.c: guardian._contains_any() and guardian._uuid_matches(), the two hot-path
 * primitives of the WHEN clauses, over the needle search of needles.c (needle sets are parsed
 * once and cached per backend).
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/fmgrprotos.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "needles.h"
#include "pg_guardian.h"

/*
 * Needle sets outlive one query: the WHEN clause folds the anchors into a new constant for every
 * statement, and parsing them again each time would cost more than the search. A few recent
 * sets are kept for the life of the backend, recognised by their bytes.
 */
#define NEEDLE_CACHE_SIZE 16
static NeedleSet *needle_cache[NEEDLE_CACHE_SIZE];
static uint64 needle_cache_serial[NEEDLE_CACHE_SIZE];	/* changes when a slot's set is replaced */
static uint64 needle_serial = 0;
static int	needle_cache_next = 0;

/* What a call site keeps: a cache slot and its serial (the set itself may have been evicted). */
typedef struct NeedleRef
{
	int			slot;
	uint64		serial;
} NeedleRef;

NeedleSet *
guardian_build_needles(ArrayType *arr, MemoryContext cxt)
{
	MemoryContext old;
	NeedleSet  *set;
	Datum	   *elems;
	bool	   *nulls;
	char	  **strs;
	int		   *lens;
	int			n;
	int			i;

	/* the element array is scratch: take it apart in the caller's context */
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	strs = palloc0(sizeof(char *) * (n + 1));
	lens = palloc0(sizeof(int) * (n + 1));
	for (i = 0; i < n; i++)
	{
		text	   *t;

		if (nulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		strs[i] = VARDATA_ANY(t);
		lens[i] = VARSIZE_ANY_EXHDR(t);
	}
	needles_utf8 = GetDatabaseEncoding() == PG_UTF8;	/* known once connected to a database */
	old = MemoryContextSwitchTo(cxt);
	set = needles_build(strs, lens, n);
	set->array_len = VARSIZE(arr);
	set->array_copy = palloc(set->array_len);
	memcpy(set->array_copy, arr, set->array_len);
	MemoryContextSwitchTo(old);
	return set;
}

static NeedleSet *
lookup_needles(ArrayType *arr, NeedleRef *ref)
{
	Size		len = VARSIZE(arr);
	int			i;
	NeedleSet  *set;
	MemoryContext cxt;

	for (i = 0; i < NEEDLE_CACHE_SIZE; i++)
	{
		set = needle_cache[i];
		if (set != NULL && set->array_len == len && memcmp(set->array_copy, arr, len) == 0)
		{
			ref->slot = i;
			ref->serial = needle_cache_serial[i];
			return set;
		}
	}
	cxt = AllocSetContextCreate(TopMemoryContext, "pg_guardian needles", ALLOCSET_SMALL_SIZES);
	set = guardian_build_needles(arr, cxt);
	set->cxt = cxt;
	if (needle_cache[needle_cache_next] != NULL)
		MemoryContextDelete((MemoryContext) needle_cache[needle_cache_next]->cxt);
	needle_cache[needle_cache_next] = set;
	needle_cache_serial[needle_cache_next] = ++needle_serial;
	ref->slot = needle_cache_next;
	ref->serial = needle_serial;
	needle_cache_next = (needle_cache_next + 1) % NEEDLE_CACHE_SIZE;
	return set;
}

PG_FUNCTION_INFO_V1(pg_guardian_contains_any);

/* guardian._contains_any(p_value text, p_needles text[]), STRICT. */
Datum
pg_guardian_contains_any(PG_FUNCTION_ARGS)
{
	text	   *haystack;
	ArrayType  *arr;
	NeedleRef  *ref = (NeedleRef *) fcinfo->flinfo->fn_extra;
	NeedleSet  *set = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();		/* declared STRICT: only a direct C call gets here */
	haystack = PG_GETARG_TEXT_PP(0);
	arr = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(arr) > 1 || ARR_ELEMTYPE(arr) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("needles must be a one-dimensional text array, not %s with %d dimensions",
						format_type_be(ARR_ELEMTYPE(arr)), ARR_NDIM(arr)),
				 errhint("e.g. SELECT guardian._contains_any('Test Clinic', ARRAY['^test$']);")));

	if (ref == NULL)
	{
		ref = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(NeedleRef));
		ref->serial = 0;
		fcinfo->flinfo->fn_extra = ref;
	}
	/* the set this call site used last, if it is still cached and the needles are the same */
	if (ref->serial != 0 && needle_cache_serial[ref->slot] == ref->serial)
	{
		set = needle_cache[ref->slot];
		if (set->array_len != VARSIZE(arr) || memcmp(set->array_copy, arr, set->array_len) != 0)
			set = NULL;
	}
	if (set == NULL)
		set = lookup_needles(arr, ref);

	PG_RETURN_BOOL(needles_search(set, (const unsigned char *) VARDATA_ANY(haystack),
								  VARSIZE_ANY_EXHDR(haystack)));
}

/*
 * guardian._uuid_matches(value uuid, bounds uuid[]) returns true when value lies in any
 * closed range [bounds[2k], bounds[2k+1]]: exact well-known UUIDs are ranges of one, and a
 * prefix such as 550e8400-e29b-41d4-a716- is the range from ...000000000000 to ...ffffffffffff.
 * UUIDs compare as 16 unsigned bytes, as uuid_cmp does.
 */
PG_FUNCTION_INFO_V1(pg_guardian_uuid_matches);

/* guardian._uuid_matches(p_value uuid, p_bounds uuid[]), STRICT. */
Datum
pg_guardian_uuid_matches(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *value;
	ArrayType  *arr;
	int			n;
	const unsigned char *data;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();		/* declared STRICT: only a direct C call gets here */
	value = PG_GETARG_UUID_P(0);
	arr = PG_GETARG_ARRAYTYPE_P(1);
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (ARR_ELEMTYPE(arr) != UUIDOID || ARR_HASNULL(arr) || n % 2 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bounds must be a uuid array of low/high pairs without NULLs, not %d %s elements%s",
						n, format_type_be(ARR_ELEMTYPE(arr)), ARR_HASNULL(arr) ? " with NULLs" : ""),
				 errhint("e.g. SELECT guardian._uuid_matches(v, ARRAY[low, high]::uuid[]); guardian._uuid_range(term) makes one pair.")));
	data = (const unsigned char *) ARR_DATA_PTR(arr);
	for (i = 0; i < n; i += 2)
	{
		const unsigned char *lo = data + i * UUID_LEN;
		const unsigned char *hi = lo + UUID_LEN;

		if (memcmp(value->data, lo, UUID_LEN) >= 0 && memcmp(value->data, hi, UUID_LEN) <= 0)
			PG_RETURN_BOOL(true);
	}
	PG_RETURN_BOOL(false);
}
