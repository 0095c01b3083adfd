/*
 * pg_guardian.h: what the C files of the library share (pg_guardian.c says which file holds
 * which SQL function).
 */
#ifndef PG_GUARDIAN_H
#define PG_GUARDIAN_H

#include "postgres.h"
#include "utils/array.h"

#include "needles.h"

/* matchers.c: a text[] of needles as a set, allocated in cxt (which it then belongs to). */
extern NeedleSet *guardian_build_needles(ArrayType *arr, MemoryContext cxt);

/* activity.c: a row passed the prefilter (prefilter.c) in this transaction. */
extern bool guardian_suspect_seen;
/* bumped whenever the compiled rules (or any function) change: cached verdicts are asked again */
extern uint64 guardian_spec_generation(void);

#endif							/* PG_GUARDIAN_H */
