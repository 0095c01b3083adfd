/*
 * pg_guardian.c: the one hot-path primitive of the contamination triggers.
 *
 * guardian._contains_any(haystack text, needles text[]) returns true when the haystack
 * contains any needle, comparing ASCII letters case-insensitively. It is the prefilter in the
 * WHEN clause of every watched table's row trigger: a row whose values contain no anchor of
 * any rule never queues a trigger event, so clean writes pay one pass over each value.
 * Needles are lower-case anchors compiled from guardian.rules; an empty needle matches every
 * value (a rule without anchors). A needle may carry word-boundary marks: a leading '^' asks
 * that no letter or digit precede it, a trailing '$' that none follow it ("^test$" finds
 * "Test Clinic" but not "Celeste" or "Testa"). Bytes >= 0x80 (UTF-8 letters) count as letters.
 * A needle starting with '#' is looked for in the value's digits only ("#55501" finds
 * "(415) 555-0123"), so phone numbers match whatever their punctuation.
 * The needle set is parsed once per query and cached.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

PG_MODULE_MAGIC;

typedef struct NeedleSet
{
	Size		array_len;		/* bytes of the cached array datum */
	char	   *array_copy;		/* copy of the array datum, to recognise it */
	int			count;
	bool		match_all;		/* an empty needle: every value matches */
	char	  **needles;
	int		   *lengths;
	bool	   *word_start;		/* '^': no word character before the match */
	bool	   *word_end;		/* '$': no word character after the match */
	int			digit_count;	/* '#' needles, matched against the digits only */
	char	  **digit_needles;
	int		   *digit_lengths;
	/* needle indexes by first byte: first[b] .. first[b + 1] in order[] */
	int			first[257];
	int		   *order;
} NeedleSet;

static inline unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static inline bool
is_word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

static NeedleSet *
build_needles(ArrayType *arr, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	NeedleSet  *set = palloc0(sizeof(NeedleSet));
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			counts[256] = {0};
	int			fill[256];

	set->array_len = VARSIZE(arr);
	set->array_copy = palloc(set->array_len);
	memcpy(set->array_copy, arr, set->array_len);

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	set->needles = palloc0(sizeof(char *) * (n + 1));
	set->lengths = palloc0(sizeof(int) * (n + 1));
	set->word_start = palloc0(sizeof(bool) * (n + 1));
	set->word_end = palloc0(sizeof(bool) * (n + 1));
	set->digit_needles = palloc0(sizeof(char *) * (n + 1));
	set->digit_lengths = palloc0(sizeof(int) * (n + 1));
	set->order = palloc0(sizeof(int) * (n + 1));
	for (i = 0; i < n; i++)
	{
		text	   *t;
		int			len;
		int			j;
		char	   *s;
		const char *src;
		bool		start = false;
		bool		end = false;

		if (nulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		len = VARSIZE_ANY_EXHDR(t);
		src = VARDATA_ANY(t);
		if (len > 1 && src[0] == '#')
		{
			int			d = 0;

			s = palloc(len);
			for (j = 1; j < len; j++)
				if (src[j] >= '0' && src[j] <= '9')
					s[d++] = src[j];
			if (d == 0)
				set->match_all = true;
			else
			{
				set->digit_needles[set->digit_count] = s;
				set->digit_lengths[set->digit_count] = d;
				set->digit_count++;
			}
			continue;
		}
		if (len > 1 && src[0] == '^')
		{
			start = true;
			src++;
			len--;
		}
		if (len > 1 && src[len - 1] == '$')
		{
			end = true;
			len--;
		}
		if (len == 0)
		{
			set->match_all = true;
			continue;
		}
		s = palloc(len);
		for (j = 0; j < len; j++)
			s[j] = (char) ascii_lower((unsigned char) src[j]);
		set->needles[set->count] = s;
		set->lengths[set->count] = len;
		set->word_start[set->count] = start;
		set->word_end[set->count] = end;
		counts[(unsigned char) s[0]]++;
		set->count++;
	}
	/* counting sort of needle indexes by first byte */
	set->first[0] = 0;
	for (i = 0; i < 256; i++)
		set->first[i + 1] = set->first[i] + counts[i];
	for (i = 0; i < 256; i++)
		fill[i] = set->first[i];
	for (i = 0; i < set->count; i++)
		set->order[fill[(unsigned char) set->needles[i][0]]++] = i;

	MemoryContextSwitchTo(old);
	return set;
}

PG_FUNCTION_INFO_V1(pg_guardian_contains_any);

Datum
pg_guardian_contains_any(PG_FUNCTION_ARGS)
{
	text	   *haystack = PG_GETARG_TEXT_PP(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	NeedleSet  *set = (NeedleSet *) fcinfo->flinfo->fn_extra;
	const unsigned char *h = (const unsigned char *) VARDATA_ANY(haystack);
	int			hlen = VARSIZE_ANY_EXHDR(haystack);
	int			i;

	if (ARR_NDIM(arr) > 1 || ARR_ELEMTYPE(arr) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("needles must be a one-dimensional text array")));

	if (set == NULL || set->array_len != VARSIZE(arr) ||
		memcmp(set->array_copy, arr, set->array_len) != 0)
	{
		set = build_needles(arr, fcinfo->flinfo->fn_mcxt);
		fcinfo->flinfo->fn_extra = set;
	}

	if (set->match_all)
		PG_RETURN_BOOL(true);

	/*
	 * Fullwidth forms (U+FF01..U+FF5E, "ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ") would slip past an ASCII
	 * comparison: fold them to ASCII first. The memchr keeps the common case free.
	 */
	if (hlen >= 3 && memchr(h, 0xEF, hlen) != NULL)
	{
		unsigned char *folded = palloc(hlen);
		int			n = 0;

		for (i = 0; i < hlen; i++)
		{
			if (h[i] == 0xEF && i + 2 < hlen && (h[i + 1] == 0xBC || h[i + 1] == 0xBD) &&
				h[i + 2] >= 0x80 && h[i + 2] <= 0xBF)
			{
				int			cp = ((h[i + 1] & 0x3F) << 6) | (h[i + 2] & 0x3F);	/* low 12 bits */

				cp += 0xF000;
				if (cp >= 0xFF01 && cp <= 0xFF5E)
				{
					folded[n++] = (unsigned char) (cp - 0xFEE0);
					i += 2;
					continue;
				}
			}
			folded[n++] = h[i];
		}
		h = folded;
		hlen = n;
	}

	for (i = 0; i < hlen; i++)
	{
		unsigned char c = ascii_lower(h[i]);
		int			k;

		for (k = set->first[c]; k < set->first[c + 1]; k++)
		{
			int			idx = set->order[k];
			int			len = set->lengths[idx];
			const char *needle = set->needles[idx];
			int			j;

			if (len > hlen - i)
				continue;
			if (set->word_start[idx] && i > 0 && is_word_byte(h[i - 1]))
				continue;
			for (j = 1; j < len; j++)
			{
				if (ascii_lower(h[i + j]) != (unsigned char) needle[j])
					break;
			}
			if (j < len)
				continue;
			if (set->word_end[idx] && i + len < hlen && is_word_byte(h[i + len]))
				continue;
			PG_RETURN_BOOL(true);
		}
	}

	if (set->digit_count > 0)
	{
		char		stackbuf[256];
		char	   *digits = hlen <= (int) sizeof(stackbuf) ? stackbuf : palloc(hlen);
		int			nd = 0;

		for (i = 0; i < hlen; i++)
			if (h[i] >= '0' && h[i] <= '9')
				digits[nd++] = (char) h[i];
		for (i = 0; i < set->digit_count; i++)
		{
			if (set->digit_lengths[i] <= nd &&
				memmem(digits, nd, set->digit_needles[i], set->digit_lengths[i]) != NULL)
				PG_RETURN_BOOL(true);
		}
	}
	PG_RETURN_BOOL(false);
}

/*
 * guardian._uuid_matches(value uuid, bounds uuid[]) returns true when value lies in any
 * closed range [bounds[2k], bounds[2k+1]]: exact well-known UUIDs are ranges of one, and a
 * prefix such as 550e8400-e29b-41d4-a716- is the range from ...000000000000 to ...ffffffffffff.
 * UUIDs compare as 16 unsigned bytes, as uuid_cmp does.
 */
PG_FUNCTION_INFO_V1(pg_guardian_uuid_matches);

Datum
pg_guardian_uuid_matches(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *value = PG_GETARG_UUID_P(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	int			n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	const unsigned char *data;
	int			i;

	if (ARR_ELEMTYPE(arr) != UUIDOID || ARR_HASNULL(arr) || n % 2 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bounds must be a uuid array of low/high pairs without NULLs")));
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
