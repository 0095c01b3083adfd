/*
 * prefilter.c: the per-row prefilter, guardian._suspect(new [, old]) in the WHEN clause of a
 * watched table's row triggers and guardian._suspect_columns() for scans.
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
 * guardian._suspect(new record [, old record]): the WHEN clause of a watched table's row
 * triggers. One call per row checks every watched column: text columns against their
 * anchors, uuid columns against their ranges, and with OLD only the columns that changed.
 * The per-table specification (attnum, anchors or bounds) comes from
 * guardian._prefilter_spec(table) and is cached per backend until a function (the compiled
 * rules) or the table changes. A small WHEN clause matters: the executor rebuilds it for every
 * statement, and six function calls folded per statement cost more than a single-row INSERT.
 */
/*
 * How a column's values are read. Text types (text, varchar, char, citext and domains over
 * them) are searched in place and uuids compared as bytes; any other type a column was
 * watched as (an override may name a bigint or jsonb column) is searched in its text output.
 */
typedef enum ReadAs
{
	READ_SKIP,
	READ_TEXT,
	READ_UUID,
	READ_OUTPUT,
	READ_CSTRING,				/* an untyped literal handed to _suspect_columns */
	READ_ALWAYS
} ReadAs;

typedef struct ColumnReader
{
	ReadAs		how;
	int16		typlen;
	bool		typbyval;
	FmgrInfo	output;
} ColumnReader;

typedef struct ColumnSpec
{
	AttrNumber	attnum;
	bool		is_uuid;
	NeedleSet  *needles;		/* text columns */
	int			nbounds;		/* uuid columns: pairs of low, high */
	pg_uuid_t  *bounds;
	uint64		first_bytes[4]; /* the first bytes any range covers, one bit each */
	ColumnReader reader;		/* as the table's column */
} ColumnSpec;

typedef struct TableSpec
{
	Oid			relid;
	TupleDesc	desc;			/* the table's row type */
	bool		any_mode;		/* for scans: the rules whatever the guard mode */
	int			ncolumns;
	ColumnSpec *columns;
} TableSpec;

#define MAX_SPECS 128
static TableSpec specs[MAX_SPECS];
static int	n_specs = 0;
static MemoryContext spec_cxt = NULL;
static bool spec_callbacks = false;
static bool specs_stale = false;
static uint64 spec_generation = 1;

static void
reset_specs(void)
{
	n_specs = 0;
	spec_generation++;
	specs_stale = false;
	if (spec_cxt != NULL)
		MemoryContextReset(spec_cxt);
}

/*
 * Invalidations can arrive in the middle of a check (a detoast opens a relation): only note
 * them here, and drop the cache at the start of the next call.
 */
static void
spec_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	specs_stale = true;
}

static void
spec_rel_callback(Datum arg, Oid relid)
{
	int			i;

	if (!OidIsValid(relid))
	{
		specs_stale = true;
		return;
	}
	for (i = 0; i < n_specs; i++)
		if (specs[i].relid == relid)
			specs_stale = true;
}

/* Columns of one kind share their anchors: build each distinct set once for all specs. */
static NeedleSet *
shared_needles(ArrayType *arr)
{
	int			i;
	int			k;

	for (i = 0; i <= n_specs && i < MAX_SPECS; i++)
	{
		for (k = 0; k < specs[i].ncolumns; k++)
		{
			NeedleSet  *set = specs[i].columns[k].needles;

			if (set != NULL && set->array_len == VARSIZE(arr) && memcmp(set->array_copy, arr, set->array_len) == 0)
				return set;
		}
	}
	return guardian_build_needles(arr, spec_cxt);
}

static void setup_reader(ColumnReader *r, ColumnSpec *col, Oid typid, MemoryContext cxt);

/*
 * Is the type the citext extension's (whatever schema it lives in)? Its values are text: a
 * base type in the string category, stored as a varlena (a composite or enum of that name is not).
 */
static bool
type_is_citext(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		Form_pg_type t = (Form_pg_type) GETSTRUCT(tup);

		result = t->typtype == TYPTYPE_BASE && t->typlen == -1 && t->typcategory == TYPCATEGORY_STRING &&
			strcmp(NameStr(t->typname), "citext") == 0;
		ReleaseSysCache(tup);
	}
	return result;
}

/* Can rows of this relation be watched (and have row triggers)? */
static inline bool
watchable_relkind(char relkind)
{
	return relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE || relkind == RELKIND_FOREIGN_TABLE;
}

/* The owner of guardian._prefilter_spec(regclass, boolean), or InvalidOid. */
static Oid
spec_owner(void)
{
	Oid			argtypes[2] = {REGCLASSOID, BOOLOID};
	List	   *names = list_make2(makeString("guardian"), makeString("_prefilter_spec"));
	Oid			fn = LookupFuncName(names, 2, argtypes, true);
	Oid			owner = InvalidOid;
	HeapTuple	tuple;

	if (!OidIsValid(fn))
		return InvalidOid;
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (HeapTupleIsValid(tuple))
	{
		owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
		ReleaseSysCache(tuple);
	}
	return owner;
}

static void
register_spec_callbacks(void)
{
	if (!spec_callbacks)
	{
		spec_cxt = AllocSetContextCreate(TopMemoryContext, "pg_guardian prefilter specs",
										 ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(PROCOID, spec_proc_callback, (Datum) 0);
		CacheRegisterRelcacheCallback(spec_rel_callback, (Datum) 0);
		spec_callbacks = true;
	}
}

/* The generation of the compiled rules this backend knows (see activity.c's source verdict). */
uint64
guardian_spec_generation(void)
{
	register_spec_callbacks();
	if (specs_stale)
		reset_specs();
	return spec_generation;
}

static TableSpec *
load_spec(Oid relid, bool any_mode)
{
	TableSpec  *spec;
	Oid			argtypes[2] = {OIDOID, BOOLOID};
	Datum		args[2];
	uint64		i;
	int			ret;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;

	register_spec_callbacks();
	if (n_specs >= MAX_SPECS)
		reset_specs();

	args[0] = ObjectIdGetDatum(relid);
	args[1] = BoolGetDatum(any_mode);
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %d", ret);

	/*
	 * The specification holds the rules' anchors, which are no business of the writer's: it
	 * is read as the owner of guardian._prefilter_spec() (guardian_owner), like a SECURITY
	 * DEFINER call, so that PUBLIC needs no EXECUTE on it. The query is fixed and calls
	 * nothing of the application's.
	 */
	owner = spec_owner();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	if (OidIsValid(owner))
		SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		ret = SPI_execute_with_args(
			"SELECT attnum, is_uuid, anchors, bounds FROM guardian._prefilter_spec($1::pg_catalog.regclass, $2)",
			2, argtypes, args, NULL, true, 0);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "guardian._prefilter_spec failed: %d", ret);

	spec = &specs[n_specs];
	spec->relid = relid;
	spec->any_mode = any_mode;
	spec->ncolumns = 0;
	spec->columns = MemoryContextAllocZero(spec_cxt, sizeof(ColumnSpec) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		ColumnSpec *col = &spec->columns[spec->ncolumns];

		col->attnum = DatumGetInt16(SPI_getbinval(row, desc, 1, &isnull));
		col->is_uuid = DatumGetBool(SPI_getbinval(row, desc, 2, &isnull));
		if (col->is_uuid)
		{
			Datum		b = SPI_getbinval(row, desc, 4, &isnull);

			if (!isnull)
			{
				ArrayType  *arr = DatumGetArrayTypeP(b);
				int			n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
				int			k;

				if (ARR_ELEMTYPE(arr) != UUIDOID || ARR_HASNULL(arr))
					ereport(ERROR,
							(errcode(ERRCODE_DATA_CORRUPTED),
							 errmsg("guardian._prefilter_spec(%u) returned UUID bounds with NULLs", relid),
							 errhint("Recompile the rules: SELECT guardian._compile_rules();")));
				col->nbounds = n / 2;
				col->bounds = MemoryContextAlloc(spec_cxt, sizeof(pg_uuid_t) * (n + 1));
				memcpy(col->bounds, ARR_DATA_PTR(arr), sizeof(pg_uuid_t) * n);
				for (k = 0; k < col->nbounds; k++)
				{
					int			b;

					for (b = col->bounds[2 * k].data[0]; b <= col->bounds[2 * k + 1].data[0]; b++)
						col->first_bytes[b >> 6] |= UINT64CONST(1) << (b & 63);
				}
			}
		}
		else
		{
			Datum		a = SPI_getbinval(row, desc, 3, &isnull);

			if (isnull)
				continue;
			col->needles = shared_needles(DatumGetArrayTypeP(a));
		}
		spec->ncolumns++;
	}
	SPI_finish();
	{
		TupleDesc	looked = lookup_rowtype_tupdesc(get_rel_type_id(relid), -1);
		MemoryContext old = MemoryContextSwitchTo(spec_cxt);

		spec->desc = CreateTupleDescCopy(looked);
		MemoryContextSwitchTo(old);
		ReleaseTupleDesc(looked);
	}
	for (i = 0; i < spec->ncolumns; i++)
	{
		ColumnSpec *col = &spec->columns[i];
		int			idx = col->attnum - 1;

		if (idx < 0 || idx >= spec->desc->natts || TupleDescAttr(spec->desc, idx)->attisdropped)
			col->reader.how = READ_SKIP;
		else
			setup_reader(&col->reader, col, TupleDescAttr(spec->desc, idx)->atttypid, spec_cxt);
	}
	n_specs++;
	return spec;
}

static bool
text_suspect(NeedleSet *set, Datum value)
{
	struct varlena *t = (struct varlena *) DatumGetPointer(value);

	/* in place unless compressed or stored out of line (pg_detoast_datum_packed's test, inlined) */
	if (VARATT_IS_COMPRESSED(t) || VARATT_IS_EXTERNAL(t))
		t = pg_detoast_datum_packed(t);
	return needles_search(set, (const unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

static Datum *deform_values = NULL;
static bool *deform_nulls = NULL;
static int	deform_size = 0;

static bool
value_suspect(ColumnSpec *col, Datum value)
{
	if (col->is_uuid)
	{
		pg_uuid_t  *u = DatumGetUUIDP(value);
		int			k;

		if (!((col->first_bytes[u->data[0] >> 6] >> (u->data[0] & 63)) & 1))
			return false;
		for (k = 0; k < col->nbounds; k++)
			if (u->data[0] >= col->bounds[2 * k].data[0] && u->data[0] <= col->bounds[2 * k + 1].data[0] &&
				memcmp(u->data, col->bounds[2 * k].data, UUID_LEN) >= 0 &&
				memcmp(u->data, col->bounds[2 * k + 1].data, UUID_LEN) <= 0)
				return true;
		return false;
	}
	return col->needles != NULL && text_suspect(col->needles, value);
}

static void
setup_reader(ColumnReader *r, ColumnSpec *col, Oid typid, MemoryContext cxt)
{
	Oid			base = getBaseType(typid);
	Oid			outfn;
	bool		varlena;

	get_typlenbyval(typid, &r->typlen, &r->typbyval);
	if (col->is_uuid)
		r->how = base == UUIDOID ? READ_UUID : READ_SKIP;
	else if (base == UNKNOWNOID || base == CSTRINGOID)
		r->how = READ_CSTRING;
	else if (base == TEXTOID || base == VARCHAROID || base == BPCHAROID ||
			 (r->typlen == -1 && type_is_citext(base)))
		r->how = READ_TEXT;
	else if (base == INT2OID || base == INT4OID || base == INT8OID || base == OIDOID ||
			 base == NUMERICOID || base == FLOAT4OID || base == FLOAT8OID || base == NAMEOID ||
			 base == UUIDOID || base == JSONBOID)
	{
		/* the output is the text the precise rules see (to_jsonb(row) ->> column) */
		getTypeOutputInfo(typid, &outfn, &varlena);
		fmgr_info_cxt(outfn, &r->output, cxt);
		r->how = READ_OUTPUT;
	}
	else
		r->how = READ_ALWAYS;	/* bool, dates, arrays, ...: the rules see JSON, so let them look */
}

static bool
read_suspect(ColumnReader *r, ColumnSpec *col, Datum value)
{
	switch (r->how)
	{
		case READ_TEXT:
		case READ_UUID:
			return value_suspect(col, value);
		case READ_ALWAYS:
			return true;
		case READ_CSTRING:
			{
				const char *out = DatumGetCString(value);

				return col->needles != NULL && needles_search(col->needles, (const unsigned char *) out, strlen(out));
			}
		case READ_OUTPUT:
			{
				char	   *out = OutputFunctionCall(&r->output, value);
				bool		found = col->needles != NULL &&
					needles_search(col->needles, (const unsigned char *) out, strlen(out));

				pfree(out);
				return found;
			}
		default:
			return false;
	}
}

/*
 * What one call site (one WHEN clause) remembers between rows: the row type it saw last and
 * that table's spec, valid while the spec generation holds.
 */
typedef struct SuspectCache
{
	Oid			typid;
	uint64		generation;
	TableSpec  *spec;
} SuspectCache;

/* Take a composite datum apart once (GetAttributeByNum would walk it again for each column). */
static void
deform_row(HeapTupleHeader row, TupleDesc desc)
{
	HeapTupleData tuple;

	if (deform_size < desc->natts)
	{
		int			size = Max(desc->natts, 32);

		deform_values = deform_values ? repalloc(deform_values, sizeof(Datum) * size)
			: MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * size);
		deform_nulls = deform_nulls ? repalloc(deform_nulls, sizeof(bool) * size)
			: MemoryContextAlloc(TopMemoryContext, sizeof(bool) * size);
		deform_size = size;
	}
	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	ItemPointerSetInvalid(&(tuple.t_self));
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = row;
	heap_deform_tuple(&tuple, desc, deform_values, deform_nulls);
}

static TableSpec *
find_spec(Oid relid, bool any_mode)
{
	int			i;

	for (i = 0; i < n_specs; i++)
		if (specs[i].relid == relid && specs[i].any_mode == any_mode)
			return &specs[i];
	return load_spec(relid, any_mode);
}

static bool
row_suspect(FmgrInfo *flinfo, HeapTupleHeader newtup, HeapTupleHeader oldtup)
{
	SuspectCache *cache = (SuspectCache *) flinfo->fn_extra;
	Oid			typid = HeapTupleHeaderGetTypeId(newtup);
	TableSpec  *spec;
	bool		found = false;
	int			i;

	if (specs_stale)
		reset_specs();
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(SuspectCache));
		flinfo->fn_extra = cache;
	}
	if (oldtup != NULL && HeapTupleHeaderGetTypeId(oldtup) != typid)
		oldtup = NULL;			/* not the same table's row: every value counts as new */
	if (cache->generation != spec_generation || cache->typid != typid)
	{
		Oid			relid = get_typ_typrelid(typid);

		/* an anonymous ROW(...), a composite type, a view's row: nothing is watched in it */
		if (!OidIsValid(relid) || !watchable_relkind(get_rel_relkind(relid)))
			return false;
		cache->spec = find_spec(relid, false);
		cache->typid = typid;
		/* loading may itself have been invalidated: then look again next row */
		cache->generation = specs_stale ? 0 : spec_generation;
	}
	spec = cache->spec;
	if (spec->ncolumns == 0)
		return false;

	deform_row(newtup, spec->desc);
	for (i = 0; i < spec->ncolumns && !found; i++)
	{
		ColumnSpec *col = &spec->columns[i];
		int			idx = col->attnum - 1;

		if (col->reader.how == READ_SKIP || deform_nulls[idx])
			continue;
		if (oldtup != NULL)
		{
			bool		oldnull;
			Datum		old = GetAttributeByNum(oldtup, col->attnum, &oldnull);

			/* unchanged values were checked when written (another encoding is just checked again) */
			if (!oldnull && datumIsEqual(deform_values[idx], old, col->reader.typbyval, col->reader.typlen))
				continue;
		}
		found = read_suspect(&col->reader, col, deform_values[idx]);
	}
	if (found)
		guardian_suspect_seen = true;
	return found;
}

PG_FUNCTION_INFO_V1(pg_guardian_suspect);

/*
 * guardian._suspect(p_new record), STRICT, and guardian._suspect(p_new record, p_old record),
 * not STRICT and PUBLIC: a NULL new row holds nothing (false), and a NULL old row, or one of
 * another type, makes every value of the new row count as new (as for an insert).
 */
Datum
pg_guardian_suspect(PG_FUNCTION_ARGS)
{
	HeapTupleHeader newtup;
	HeapTupleHeader oldtup = NULL;

	if (PG_NARGS() < 1 || PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	newtup = PG_GETARG_HEAPTUPLEHEADER(0);
	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
		oldtup = PG_GETARG_HEAPTUPLEHEADER(1);
	PG_RETURN_BOOL(row_suspect(fcinfo->flinfo, newtup, oldtup));
}

/*
 * guardian._suspect_columns(table regclass, VARIADIC "any"): the scan's prefilter. The values
 * come as pairs (attnum integer, value) straight from the scan's own columns, so no row is
 * built and taken apart again for every call; the rules are those that apply whatever the guard
 * mode. A column the table's spec does not list is not looked at.
 */
typedef struct ColumnsCache
{
	Oid			relid;
	uint64		generation;
	int			npairs;
	ColumnSpec **columns;		/* per pair, the column's spec or NULL */
	ColumnReader *readers;		/* per pair */
} ColumnsCache;

PG_FUNCTION_INFO_V1(pg_guardian_suspect_columns);

#define SUSPECT_COLUMNS_HINT "e.g. SELECT guardian._suspect_columns('public.patients', 2, t.email, 3, t.full_name) FROM public.patients AS t;"

/* The table of a _suspect_columns call: one that exists and can be scanned. */
static void
check_scanned_table(Oid relid)
{
	char		relkind = get_rel_relkind(relid);

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("guardian._suspect_columns: there is no table with OID %u", relid),
				 errhint(SUSPECT_COLUMNS_HINT)));
	if (!watchable_relkind(relkind) && relkind != RELKIND_MATVIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("guardian._suspect_columns: %s is not a table", get_rel_name(relid)),
				 errhint(SUSPECT_COLUMNS_HINT)));
}

/*
 * The call site's arguments, checked once (they are the same for every row): an odd number,
 * passed one by one (not as a VARIADIC array), each attnum a constant integer, each value of a
 * known type.
 */
static void
check_suspect_columns_call(FunctionCallInfo fcinfo)
{
	FmgrInfo   *flinfo = fcinfo->flinfo;
	int			j;

	if (get_fn_expr_variadic(flinfo) || PG_NARGS() < 3 || PG_NARGS() % 2 != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("guardian._suspect_columns takes a table and (attnum, value) pairs as separate arguments, not %d %s",
						PG_NARGS() - 1, get_fn_expr_variadic(flinfo) ? "VARIADIC array" : "arguments after the table"),
				 errhint(SUSPECT_COLUMNS_HINT)));
	for (j = 1; j < PG_NARGS(); j += 2)
	{
		Oid			attnum_type = get_fn_expr_argtype(flinfo, j);

		if (attnum_type != INT4OID || !get_fn_expr_arg_stable(flinfo, j) || PG_ARGISNULL(j))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("guardian._suspect_columns: argument %d must be a constant integer attnum, not %s",
							j + 1, PG_ARGISNULL(j) ? "NULL" : OidIsValid(attnum_type) ? format_type_be(attnum_type) : "of unknown type"),
					 errhint(SUSPECT_COLUMNS_HINT)));
		if (!OidIsValid(get_fn_expr_argtype(flinfo, j + 1)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("guardian._suspect_columns: the type of argument %d is not known", j + 2),
					 errhint(SUSPECT_COLUMNS_HINT)));
	}
}

/* guardian._suspect_columns(p_table regclass, VARIADIC p_columns "any"), not STRICT. */
Datum
pg_guardian_suspect_columns(PG_FUNCTION_ARGS)
{
	ColumnsCache *cache = (ColumnsCache *) fcinfo->flinfo->fn_extra;
	Oid			relid;
	int			j;

	if (cache == NULL)
	{
		int			npairs = (PG_NARGS() - 1) / 2;

		check_suspect_columns_call(fcinfo);
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnsCache));
		cache->columns = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnSpec *) * (npairs + 1));
		cache->readers = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnReader) * (npairs + 1));
		cache->npairs = npairs;
		fcinfo->flinfo->fn_extra = cache;
	}
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	relid = PG_GETARG_OID(0);
	if (specs_stale)
		reset_specs();
	if (cache->generation != spec_generation || cache->relid != relid)
	{
		TableSpec  *spec;

		check_scanned_table(relid);
		spec = find_spec(relid, true);
		for (j = 0; j < cache->npairs; j++)
		{
			int			attnum = PG_GETARG_INT32(1 + 2 * j);
			int			k;

			cache->columns[j] = NULL;
			for (k = 0; k < spec->ncolumns; k++)
			{
				if (spec->columns[k].attnum != attnum)
					continue;
				cache->columns[j] = &spec->columns[k];
				setup_reader(&cache->readers[j], &spec->columns[k],
							 get_fn_expr_argtype(fcinfo->flinfo, 2 + 2 * j), fcinfo->flinfo->fn_mcxt);
			}
		}
		cache->relid = relid;
		/* loading may itself have been invalidated: then look again next row */
		cache->generation = specs_stale ? 0 : spec_generation;
	}
	for (j = 0; j < cache->npairs; j++)
	{
		ColumnSpec *col = cache->columns[j];

		if (col != NULL && !PG_ARGISNULL(2 + 2 * j) &&
			read_suspect(&cache->readers[j], col, PG_GETARG_DATUM(2 + 2 * j)))
			PG_RETURN_BOOL(true);
	}
	PG_RETURN_BOOL(false);
}
