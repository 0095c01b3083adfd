/*
 * activity.c: the statement counters, guardian._activity_start() and _activity_end(): the two
 * statement triggers of every watched table log each write's row count.
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
 * Activity accounting: the two statement triggers of every watched table, in C because they
 * run on every write and PL/pgSQL would cost more than a single-row INSERT itself.
 *
 * BEFORE STATEMENT notes the transaction's row counters for the table (the statistics
 * counters of a backend also hold earlier transactions' unflushed counts, so the difference
 * is what counts); AFTER STATEMENT takes the difference and appends one row to the UNLOGGED
 * guardian.activity_log with a direct heap insert (no executor, no WAL, no index). Only when
 * there is more to do (more than one row, or findings to group) does it call the PL/pgSQL
 * guardian._statement_followup().
 */
typedef struct Baseline
{
	Oid			relid;
	char		op;
	int			level;			/* the (sub)transaction nesting level of the statement */
	int64		value;
} Baseline;

#define MAX_BASELINES 64
static Baseline baselines[MAX_BASELINES];
bool		guardian_suspect_seen = false;	/* a row passed the prefilter in this transaction */
static int	n_baselines = 0;
static bool callback_registered = false;

/*
 * Sources with an alert of their own: a test tool or CI runner writing to production, or a
 * source whose writes brought test data before. guardian._source_verdict() says whether this
 * session's next write raises one today; it is asked once per application name, session user
 * and generation of the compiled rules (a change of test sources, risky sources or the
 * environment recompiles them). Once the follow-up has raised the day's alert and that
 * transaction committed, the session is not asked again until the next day.
 */
static bool source_known = false;
static bool source_flagged = false;
static char *source_app = NULL;
static Oid	source_user = InvalidOid;
static uint64 source_generation = 0;
static int64 announced_day = -1;
static int64 pending_day = -1;

static int64
current_day(void)
{
	return (int64) (GetCurrentTimestamp() / USECS_PER_DAY);
}

static bool
source_needs_followup(void)
{
	uint64		generation = guardian_spec_generation();
	const char *app = application_name != NULL ? application_name : "";
	int64		today = current_day();

	if (!source_known || generation != source_generation || GetSessionUserId() != source_user ||
		strcmp(app, source_app) != 0)
	{
		List	   *names = list_make2(makeString("guardian"), makeString("_source_verdict"));
		Oid			fn = LookupFuncName(names, 0, NULL, true);
		bool		flagged = OidIsValid(fn) && DatumGetBool(OidFunctionCall0(fn));
		char	   *copy = MemoryContextStrdup(TopMemoryContext, app);

		if (source_app != NULL)
			pfree(source_app);
		source_app = copy;
		source_user = GetSessionUserId();
		source_generation = generation;
		source_flagged = flagged;
		source_known = true;
		announced_day = -1;
	}
	return source_flagged && announced_day != today && pending_day != today;
}

static void
reset_baselines(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		announced_day = pending_day >= 0 ? pending_day : announced_day;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		n_baselines = 0;
		guardian_suspect_seen = false;
		pending_day = -1;
	}
}

/*
 * A statement that failed inside a savepoint never reached its AFTER trigger: drop its baseline
 * when the subtransaction aborts, or a later statement on the same table would take it for its
 * own (and the stack would fill up).
 */
static void
drop_aborted_baselines(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	int			level;
	int			i;
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	level = GetCurrentTransactionNestLevel();
	for (i = 0; i < n_baselines; i++)
		if (baselines[i].level < level)
			baselines[kept++] = baselines[i];
	n_baselines = kept;
}

/* "INSERT", "UPDATE" or "DELETE" as text, made once. */
static Datum
op_name(char op)
{
	static Datum names[3];
	int			k = op == 'I' ? 0 : (op == 'U' ? 1 : 2);

	if (names[k] == (Datum) 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		names[k] = CStringGetTextDatum(k == 0 ? "INSERT" : (k == 1 ? "UPDATE" : "DELETE"));
		MemoryContextSwitchTo(old);
	}
	return names[k];
}

static char
trigger_op(TriggerData *trigdata)
{
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		return 'I';
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return 'U';
	return 'D';
}

static int64
counter_for(Oid relid, char op)
{
	Datum		d = ObjectIdGetDatum(relid);

	switch (op)
	{
		case 'I':
			return DatumGetInt64(DirectFunctionCall1(pg_stat_get_xact_tuples_inserted, d));
		case 'U':
			return DatumGetInt64(DirectFunctionCall1(pg_stat_get_xact_tuples_updated, d));
		default:
			return DatumGetInt64(DirectFunctionCall1(pg_stat_get_xact_tuples_deleted, d));
	}
}

static int64
xact_rows(Relation rel, char op)
{
	Oid			relid = RelationGetRelid(rel);
	List	   *members;
	ListCell   *lc;
	int64		total = 0;

	if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		return counter_for(relid, op);
	members = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, members)
		total += counter_for(lfirst_oid(lc), op);
	list_free(members);
	return total;
}

/*
 * The activity functions are trigger functions (SQL cannot call them otherwise), but anyone with
 * EXECUTE could attach them as the wrong kind of trigger: only a statement-level trigger of the
 * expected timing, on INSERT, UPDATE or DELETE of a table, gets past this.
 */
static void
check_statement_trigger(FunctionCallInfo fcinfo, const char *name, bool before)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	char		relkind;
	char	   *table;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be called as a trigger", name),
				 errhint("guardian.watch() creates the triggers that use it.")));
	table = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(trigdata->tg_relation)),
									   RelationGetRelationName(trigdata->tg_relation));
	if (!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		(before ? !TRIGGER_FIRED_BEFORE(trigdata->tg_event) : !TRIGGER_FIRED_AFTER(trigdata->tg_event)) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		  TRIGGER_FIRED_BY_DELETE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be fired %s INSERT OR UPDATE OR DELETE FOR EACH STATEMENT, not by trigger %s on %s",
						name, before ? "BEFORE" : "AFTER", quote_identifier(trigdata->tg_trigger->tgname), table),
				 errhint("Drop that trigger and let guardian.watch() create the triggers: SELECT guardian.watch('%s');",
						 table)));
	relkind = trigdata->tg_relation->rd_rel->relkind;
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE && relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s can only watch a table, and %s is not one", name, table),
				 errhint("DROP TRIGGER %s ON %s; watch the tables it writes to instead.",
						 quote_identifier(trigdata->tg_trigger->tgname), table)));
}

PG_FUNCTION_INFO_V1(pg_guardian_activity_start);

Datum
pg_guardian_activity_start(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;

	check_statement_trigger(fcinfo, "guardian._activity_start()", true);
	trigdata = (TriggerData *) fcinfo->context;
	if (!callback_registered)
	{
		RegisterXactCallback(reset_baselines, NULL);
		RegisterSubXactCallback(drop_aborted_baselines, NULL);
		callback_registered = true;
	}
	if (n_baselines < MAX_BASELINES)
	{
		Baseline   *b = &baselines[n_baselines++];

		b->relid = RelationGetRelid(trigdata->tg_relation);
		b->op = trigger_op(trigdata);
		b->level = GetCurrentTransactionNestLevel();
		b->value = xact_rows(trigdata->tg_relation, b->op);
	}
	PG_RETURN_POINTER(NULL);
}

static Oid
guardian_relation(const char *name)
{
	Oid			nsp = get_namespace_oid("guardian", false);
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("pg_guardian is not installed correctly: guardian.%s is missing", name),
				 errhint("Reinstall with: pg-guardian upgrade (or ALTER EXTENSION pg_guardian UPDATE).")));
	return relid;
}

/*
 * What every statement's log row needs and rarely changes, looked up once: the log's relid
 * (until a relcache invalidation for it) and the session user's name (until a role changes).
 */
static Oid	activity_log_relid = InvalidOid;
static Oid	logged_user = InvalidOid;
static Datum logged_user_name = (Datum) 0;
static bool activity_callbacks = false;

static void
activity_rel_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == activity_log_relid)
		activity_log_relid = InvalidOid;
}

static void
activity_role_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	logged_user = InvalidOid;
}

static Datum
session_user_name(void)
{
	Oid			user = GetSessionUserId();

	if (user != logged_user)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		Datum		name = CStringGetTextDatum(GetUserNameFromId(user, false));	/* may fail: first */

		MemoryContextSwitchTo(old);
		if (logged_user_name != (Datum) 0)
			pfree(DatumGetPointer(logged_user_name));
		logged_user_name = name;
		logged_user = user;
	}
	return logged_user_name;
}

static Oid
activity_log(void)
{
	if (!activity_callbacks)
	{
		CacheRegisterRelcacheCallback(activity_rel_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, activity_role_callback, (Datum) 0);
		activity_callbacks = true;
	}
	if (!OidIsValid(activity_log_relid))
		activity_log_relid = guardian_relation("activity_log");
	return activity_log_relid;
}

PG_FUNCTION_INFO_V1(pg_guardian_activity_end);

Datum
pg_guardian_activity_end(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Relation	rel;
	Oid			relid;
	Oid			root;
	char		op;
	int64		base = 0;
	int64		rows;
	int			i;
	bool		announce;

	check_statement_trigger(fcinfo, "guardian._activity_end()", false);
	trigdata = (TriggerData *) fcinfo->context;
	rel = trigdata->tg_relation;
	relid = RelationGetRelid(rel);
	op = trigger_op(trigdata);

	for (i = n_baselines - 1; i >= 0; i--)
	{
		if (baselines[i].relid == relid && baselines[i].op == op)
		{
			base = baselines[i].value;
			/* statements nest: take the innermost and drop it */
			memmove(&baselines[i], &baselines[i + 1], sizeof(Baseline) * (n_baselines - i - 1));
			n_baselines--;
			break;
		}
	}
	rows = xact_rows(rel, op) - base;

	root = relid;
	if (rel->rd_rel->relispartition)
		root = llast_oid(get_partition_ancestors(relid));

	if (rows > 0)
	{
		Oid			logid = activity_log();
		Relation	log = table_open(logid, RowExclusiveLock);
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		HeapTuple	tuple;

		values[0] = ObjectIdGetDatum(root);
		values[1] = op_name(op);
		values[2] = Int64GetDatum(rows);
		values[3] = session_user_name();
		if (application_name != NULL && application_name[0] != '\0')
			values[4] = CStringGetTextDatum(application_name);
		else
			nulls[4] = true;
		values[5] = TimestampTzGetDatum(GetCurrentTimestamp());
		if (RelationGetDescr(log)->natts != 6)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("guardian.activity_log has an unexpected shape"),
					 errhint("Reinstall pg_guardian so that the library and the SQL match.")));
		tuple = heap_form_tuple(RelationGetDescr(log), values, nulls);
		simple_heap_insert(log, tuple);
		heap_freetuple(tuple);
		table_close(log, NoLock);	/* held to the end of the transaction, as usual */
	}

	/*
	 * Findings wait for grouping only after a row passed the prefilter in this transaction;
	 * the follow-up looks for them in guardian.findings (no setting the session could clear).
	 */
	announce = rows > 0 && source_needs_followup();
	if (announce)
		pending_day = current_day();	/* the follow-up raises the source's alert */
	if (rows > 1 || guardian_suspect_seen || announce)
	{
		Oid			argtypes[3] = {REGCLASSOID, TEXTOID, INT8OID};
		List	   *names = list_make2(makeString("guardian"), makeString("_statement_followup"));
		Oid			fn = LookupFuncName(names, 3, argtypes, false);

		OidFunctionCall3(fn, ObjectIdGetDatum(root),
						 op_name(op),
						 Int64GetDatum(rows));
	}
	PG_RETURN_POINTER(NULL);
}
