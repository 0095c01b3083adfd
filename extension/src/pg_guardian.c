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
 * "(415) 555-0123"), so phone numbers match whatever their punctuation; in it '?' stands for
 * any digit and a trailing '$' asks that the digits end there ("#55501??$": 555-01XX at the end).
 * The needle set is parsed once and cached.
 *
 * The search is built for clean values, which are nearly all of them: most needles can only
 * start where a word starts or at a byte between words, so a search finds those positions 64
 * bytes at a time as bit masks and tests only them against a trigram bitmap before comparing
 * any needle (see NeedleSet). Sets with needles that may start anywhere inside a word test every
 * position against the bitmap instead. Short values that come again (names, clinics) are
 * answered from a small memo per set (see search_needles).
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/fmgrprotos.h"
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
#include "port/pg_bitutils.h"
#include "port/pg_bswap.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

PG_MODULE_MAGIC;

typedef struct NeedleSet
{
	MemoryContext cxt;			/* cached sets: the context holding all of it */
	Size		array_len;		/* bytes of the cached array datum */
	char	   *array_copy;		/* copy of the array datum, to recognise it */
	int			count;
	int			min_length;		/* of the shortest needle: no match starts later than this from the end */
	bool		match_all;		/* an empty needle: every value matches */
	char	  **needles;
	int		   *lengths;
	bool	   *word_start;		/* '^': no word character before the match */
	bool	   *word_end;		/* '$': no word character after the match */
	int			digit_count;	/* '#' needles, matched against the digits only */
	char	  **digit_needles;
	int		   *digit_lengths;
	bool	   *digit_ends;		/* '$': the number's digits end with the needle */
	struct NeedleSet *digits;	/* the same needles, indexed like the others */
	/* needle indexes by first byte: first[b] .. first[b + 1] in order[] */
	int			first[257];
	int		   *order;
	/* within a first byte b, by second byte c: second[b][c] .. second[b][c + 1] in order[] */
	int		   *second[256];
	/* per position in order[]: the needle's first 8 bytes and which of them to compare */
	uint64	   *prefix;
	uint64	   *prefix_mask;

	/*
	 * A first test at every position of a value: the needles' first three bytes as classes (a
	 * letter whatever its case, a digit, a space, '.' or '@', ...: five bits each, 0 past the
	 * end), one bit per trigram, in a bitmap small enough to stay in the L1 cache. Needles
	 * marked '^' have their own bitmap, tested only where a word starts. A shorter needle sets
	 * every trigram it can begin. The set of digit needles is keyed by four digits instead
	 * (phone numbers are all digits: classes would tell nothing there).
	 */
	bool		digit_keys;
	uint64	   *grams;
	uint64	   *start_grams;

	/*
	 * Most needles can only start at a word start ('^' needles) or at a byte that is not part of
	 * a word ("@example$", ".test$"); the rest, unanchored, still hold such a byte somewhere
	 * ("mailinator.com", "t use$"): the pivot, at a known offset. When every needle is one of
	 * these (sparse), a search visits only the bytes between words and skips words in a tight
	 * loop. pivots[pivot_index[b][a] .. pivot_index[b][a + 1]) are the needles whose pivot is
	 * byte b, preceded in the needle by byte a.
	 */
	bool		sparse;
	uint64	   *between_grams;	/* sparse: grams | start_grams, for the bytes between words */
	int		   *pivot_index[256];
	int		   *pivots;
	int		   *pivot_offsets;
	/* per pivot entry: the needle's (up to) eight bytes before its pivot, as lower8_before() reads */
	uint64	   *pivot_back;
	uint64	   *pivot_back_mask;

	/*
	 * Recent short values and whether they matched (see search_needles): names, clinics and
	 * cities repeat, and a repeated value is found here for less than a search costs.
	 */
	struct MemoEntry *memo;
	uint32		memo_lookups;
	uint32		memo_hits;
	uint32		memo_pause;		/* values left to search without the memo */
} NeedleSet;

#define MEMO_SLOTS 512			/* 16 kB a set */
#define MEMO_MAX_LEN 24
#define MEMO_ROUND 4096			/* lookups between two looks at the hit rate */
#define MEMO_PAUSE 65536		/* values searched without it when it hardly ever hits */

typedef struct MemoEntry		/* 32 bytes: one cache line holds it whole */
{
	uint64		words[3];		/* the value's bytes, as memo_words() reads them */
	int32		len;			/* 0: empty slot */
	int32		found;
} MemoEntry;

#define TEXT_GRAMS (1 << 15)
#define DIGIT_GRAMS (1 << 16)
#define GRAM_SET(bits, key) ((bits)[(key) >> 6] |= UINT64CONST(1) << ((key) & 63))
#define GRAM_HAS(bits, key) (((bits)[(key) >> 6] >> ((key) & 63)) & 1)
#define TEXT_GRAM(a, b, c) (((a) << 10) | ((b) << 5) | (c))
#define DIGIT_GRAM(a, b, c, d) (((a) << 12) | ((b) << 8) | ((c) << 4) | (d))


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

static unsigned char byte_class[256];
static bool word_byte[256];
static bool byte_class_ready = false;

static void
init_byte_classes(void)
{
	int			c;

	for (c = 0; c < 256; c++)
	{
		word_byte[c] = is_word_byte((unsigned char) c);
		if (c >= 'a' && c <= 'z')
			byte_class[c] = 1 + (c - 'a');
		else if (c >= 'A' && c <= 'Z')
			byte_class[c] = 1 + (c - 'A');
		else if (c >= '0' && c <= '9')
			byte_class[c] = 27;
		else if (c == ' ')
			byte_class[c] = 28;
		else if (c == '.' || c == '@')
			byte_class[c] = 29;
		else if (c == '+' || c == '-' || c == '_')
			byte_class[c] = 30;
		else
			byte_class[c] = 31; /* other punctuation, UTF-8 bytes (NUL cannot occur in text) */
	}
	byte_class_ready = true;
}

/* A digit as a key digit: 1..10, 0 being past the end. */
#define DIGIT_CLASS(c) ((c) - '0' + 1)

/* ASCII upper-case letters of eight bytes to lower case at once (other bytes unchanged). */
static inline uint64
lower8(uint64 x)
{
	uint64		heptets = x & UINT64CONST(0x7F7F7F7F7F7F7F7F);
	uint64		ge_a = heptets + UINT64CONST(0x3F3F3F3F3F3F3F3F);	/* high bit: >= 'A' */
	uint64		gt_z = heptets + UINT64CONST(0x2525252525252525);	/* high bit: > 'Z' */

	return x | ((ge_a & ~gt_z & ~x & UINT64CONST(0x8080808080808080)) >> 2);
}

/* Eight bytes from h as a little-endian word: byte j in bits 8j..8j+7. */
static inline uint64
load8(const unsigned char *h)
{
	uint64		x;

	memcpy(&x, h, sizeof(x));
#ifdef WORDS_BIGENDIAN
	x = pg_bswap64(x);
#endif
	return x;
}

/*
 * The first n bytes at h (1 <= n; 8 or more reads eight) as load8() reads them, zeros after:
 * overlapping loads inside h[0..n), no byte past it read.
 */
static inline uint64
load_upto8(const unsigned char *h, int n)
{
	uint32		a;
	uint32		b;

	if (n >= 8)
		return load8(h);
	if (n < 4)
		return (uint64) h[0] | ((uint64) h[n >> 1] << (8 * (n >> 1))) | ((uint64) h[n - 1] << (8 * (n - 1)));
	memcpy(&a, h, 4);
	memcpy(&b, h + n - 4, 4);
#ifdef WORDS_BIGENDIAN
	a = pg_bswap32(a);
	b = pg_bswap32(b);
#endif
	return (uint64) a | ((uint64) b << (8 * (n - 4)));
}

/* h[i..i+8) in lower case, 0 past the end. */
static inline uint64
lower8_at(const unsigned char *h, int hlen, int i)
{
	return lower8(load_upto8(h + i, hlen - i));
}

/* h[p-8..p) in lower case, h[p-1] in the top byte, 0 before the start (p > 0). */
static inline uint64
lower8_before(const unsigned char *h, int p)
{
	return p >= 8 ? lower8(load8(h + p - 8)) : lower8(load_upto8(h, p) << (8 * (8 - p)));
}

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

static NeedleSet *build_needles(ArrayType *arr, MemoryContext cxt);
static void index_grams(NeedleSet *set);
static void index_pivots(NeedleSet *set);

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
	set = build_needles(arr, cxt);
	set->cxt = cxt;
	if (needle_cache[needle_cache_next] != NULL)
		MemoryContextDelete(needle_cache[needle_cache_next]->cxt);
	needle_cache[needle_cache_next] = set;
	needle_cache_serial[needle_cache_next] = ++needle_serial;
	ref->slot = needle_cache_next;
	ref->serial = needle_serial;
	needle_cache_next = (needle_cache_next + 1) % NEEDLE_CACHE_SIZE;
	return set;
}

/* The second byte of a needle, 0 for one-byte needles (they sort first in their bucket). */
static inline int
second_byte(NeedleSet *set, int idx)
{
	/* a digit wildcard second byte goes with the one-byte needles: any second byte will do */
	if (set->lengths[idx] < 2 || (set->digit_keys && set->needles[idx][1] == '?'))
		return 0;
	return (unsigned char) set->needles[idx][1];
}

static int
compare_needles(const void *a, const void *b, void *arg)
{
	NeedleSet  *set = (NeedleSet *) arg;
	int			ia = *(const int *) a;
	int			ib = *(const int *) b;
	int			fa = (unsigned char) set->needles[ia][0];
	int			fb = (unsigned char) set->needles[ib][0];

	if (fa != fb)
		return fa - fb;
	return second_byte(set, ia) - second_byte(set, ib);
}


/* The second-level index: for each first byte present, where each second byte starts. */
static void
index_second_bytes(NeedleSet *set)
{
	int			c;

	for (c = 0; c < 256; c++)
	{
		int			lo = set->first[c];
		int			hi = set->first[c + 1];
		int		   *sec;
		int			k;
		int			b;

		if (lo == hi)
			continue;
		sec = palloc0(sizeof(int) * 258);
		for (k = lo; k < hi; k++)
			sec[second_byte(set, set->order[k]) + 1]++;
		sec[0] = lo;
		for (b = 0; b < 257; b++)
			sec[b + 1] += sec[b];
		set->second[c] = sec;
	}
	set->prefix = palloc0(sizeof(uint64) * (set->count + 1));
	set->prefix_mask = palloc0(sizeof(uint64) * (set->count + 1));
	for (c = 0; c < set->count; c++)
	{
		int			idx = set->order[c];
		int			j;

		for (j = 0; j < Min(8, set->lengths[idx]); j++)
		{
			unsigned char b = (unsigned char) set->needles[idx][j];

			if (set->digit_keys && b == '?')
				continue;		/* any digit */
			set->prefix[c] |= (uint64) b << (8 * j);
			set->prefix_mask[c] |= (uint64) 0xFF << (8 * j);
		}
	}
	index_grams(set);
}

static void
index_grams(NeedleSet *set)
{
	int			size = set->digit_keys ? DIGIT_GRAMS : TEXT_GRAMS;
	int			k;

	if (!byte_class_ready)
		init_byte_classes();
	set->grams = palloc0(sizeof(uint64) * (size / 64 + 1));
	set->start_grams = palloc0(sizeof(uint64) * (size / 64 + 1));
	for (k = 0; k < set->count; k++)
	{
		const unsigned char *n = (const unsigned char *) set->needles[k];
		int			len = set->lengths[k];
		uint64	   *bits = set->word_start[k] ? set->start_grams : set->grams;
		int			x[4];
		int			lo[4];
		int			hi[4];
		int			j;
		int			classes = set->digit_keys ? 11 : 32;
		int			width = set->digit_keys ? 4 : 3;

		/* each key position: the needle's byte, or any class where the needle is shorter */
		for (j = 0; j < 4; j++)
		{
			if (j >= width)
				lo[j] = hi[j] = 0;
			else if (j < len && !(set->digit_keys && n[j] == '?'))
				lo[j] = hi[j] = set->digit_keys ? DIGIT_CLASS(n[j]) : byte_class[n[j]];
			else if (j < len)
			{
				lo[j] = 1;		/* a digit wildcard: any digit */
				hi[j] = 10;
			}
			else
			{
				lo[j] = 0;
				hi[j] = classes - 1;
			}
		}
		for (x[0] = lo[0]; x[0] <= hi[0]; x[0]++)
			for (x[1] = lo[1]; x[1] <= hi[1]; x[1]++)
				for (x[2] = lo[2]; x[2] <= hi[2]; x[2]++)
					for (x[3] = lo[3]; x[3] <= hi[3]; x[3]++)
					{
						if (set->digit_keys)
							GRAM_SET(bits, DIGIT_GRAM(x[0], x[1], x[2], x[3]));
						else
							GRAM_SET(bits, TEXT_GRAM(x[0], x[1], x[2]));
					}
	}
	if (!set->digit_keys)
		index_pivots(set);
}

/* A needle's pivot: where an unanchored needle that starts inside a word holds a non-word byte. */
static int
pivot_offset(NeedleSet *set, int k)
{
	const unsigned char *n = (const unsigned char *) set->needles[k];
	int			j;

	if (set->word_start[k] || !word_byte[n[0]])
		return 0;				/* found from a word start or from its own first byte */
	for (j = 1; j < set->lengths[k]; j++)
		if (!word_byte[n[j]])
			return j;
	return -1;					/* all word bytes: it could start anywhere */
}

static void
index_pivots(NeedleSet *set)
{
	int			total = 0;
	int			fill = 0;
	int			k;
	int			b;

	set->sparse = true;
	for (k = 0; k < set->count; k++)
	{
		int			o = pivot_offset(set, k);

		if (o < 0)
			set->sparse = false;
		else if (o > 0)
		{
			b = (unsigned char) set->needles[k][o];
			if (set->pivot_index[b] == NULL)
				set->pivot_index[b] = palloc0(sizeof(int) * 258);
			set->pivot_index[b][(unsigned char) set->needles[k][o - 1] + 1]++;
			total++;
		}
	}
	if (set->sparse)
	{
		set->between_grams = palloc0(sizeof(uint64) * (TEXT_GRAMS / 64));
		for (k = 0; k < TEXT_GRAMS / 64; k++)
			set->between_grams[k] = set->grams[k] | set->start_grams[k];
	}
	set->pivots = palloc0(sizeof(int) * (total + 1));
	set->pivot_offsets = palloc0(sizeof(int) * (total + 1));
	set->pivot_back = palloc0(sizeof(uint64) * (total + 1));
	set->pivot_back_mask = palloc0(sizeof(uint64) * (total + 1));
	/* counts to bounds, then fill each (pivot, previous byte) bucket in needle order */
	for (b = 0; b < 256; b++)
	{
		int		   *idx = set->pivot_index[b];
		int			a;

		if (idx == NULL)
			continue;
		idx[0] = fill;
		for (a = 0; a < 257; a++)
			idx[a + 1] += idx[a];
		fill = idx[257];
	}
	for (b = 0; b < 256; b++)
	{
		int		   *idx = set->pivot_index[b];
		int			a;

		if (idx == NULL)
			continue;
		for (a = 0; a < 256; a++)
		{
			int			slot = idx[a];

			for (k = 0; k < set->count; k++)
			{
				int			o = pivot_offset(set, k);

				if (o > 0 && (unsigned char) set->needles[k][o] == b &&
					(unsigned char) set->needles[k][o - 1] == a)
				{
					int			t;

					set->pivots[slot] = k;
					set->pivot_offsets[slot] = o;
					for (t = 1; t <= Min(8, o); t++)
					{
						set->pivot_back[slot] |= (uint64) (unsigned char) set->needles[k][o - t] << (8 * (8 - t));
						set->pivot_back_mask[slot] |= (uint64) 0xFF << (8 * (8 - t));
					}
					slot++;
				}
			}
		}
	}
}

/* An index over digit needles (every byte a word byte: '$' is the end of the digits). */
static NeedleSet *
index_plain_needles(char **needles, int *lengths, bool *ends, int n)
{
	NeedleSet  *set = palloc0(sizeof(NeedleSet));
	int			i;
	int			counts[256] = {0};

	set->count = n;
	set->needles = needles;
	set->lengths = lengths;
	set->word_start = palloc0(sizeof(bool) * (n + 1));
	set->word_end = ends;
	set->order = palloc0(sizeof(int) * (n + 1));
	set->digit_keys = true;
	set->min_length = INT_MAX;
	for (i = 0; i < n; i++)
	{
		counts[(unsigned char) needles[i][0]]++;
		set->order[i] = i;
		set->min_length = Min(set->min_length, lengths[i]);
	}
	set->first[0] = 0;
	for (i = 0; i < 256; i++)
		set->first[i + 1] = set->first[i] + counts[i];
	qsort_arg(set->order, n, sizeof(int), compare_needles, set);
	index_second_bytes(set);
	return set;
}

/* A set's memo, zeroed, aligned so that no entry straddles two cache lines. */
static MemoEntry *
palloc_aligned_memo(void)
{
	char	   *raw = palloc0(sizeof(MemoEntry) * (MEMO_SLOTS + 1));

	return (MemoEntry *) TYPEALIGN(sizeof(MemoEntry), raw);
}

static NeedleSet *
build_needles(ArrayType *arr, MemoryContext cxt)
{
	MemoryContext old;
	NeedleSet  *set;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			counts[256] = {0};

	/* the element array is scratch: take it apart in the caller's context */
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	old = MemoryContextSwitchTo(cxt);
	set = palloc0(sizeof(NeedleSet));
	set->array_len = VARSIZE(arr);
	set->array_copy = palloc(set->array_len);
	memcpy(set->array_copy, arr, set->array_len);
	set->needles = palloc0(sizeof(char *) * (n + 1));
	set->lengths = palloc0(sizeof(int) * (n + 1));
	set->word_start = palloc0(sizeof(bool) * (n + 1));
	set->word_end = palloc0(sizeof(bool) * (n + 1));
	set->digit_needles = palloc0(sizeof(char *) * (n + 1));
	set->digit_lengths = palloc0(sizeof(int) * (n + 1));
	set->digit_ends = palloc0(sizeof(bool) * (n + 1));
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
				if ((src[j] >= '0' && src[j] <= '9') || (src[j] == '?' && d > 0))
					s[d++] = src[j];	/* a leading wildcard would only widen the search */
			if (d == 0)
				set->match_all = true;
			else
			{
				set->digit_needles[set->digit_count] = s;
				set->digit_lengths[set->digit_count] = d;
				set->digit_ends[set->digit_count] = src[len - 1] == '$';
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
	/* needle indexes sorted by first, then second byte; first[] bounds each first byte */
	set->first[0] = 0;
	for (i = 0; i < 256; i++)
		set->first[i + 1] = set->first[i] + counts[i];
	for (i = 0; i < set->count; i++)
		set->order[i] = i;
	qsort_arg(set->order, set->count, sizeof(int), compare_needles, set);
	index_second_bytes(set);
	if (set->digit_count > 0)
		set->digits = index_plain_needles(set->digit_needles, set->digit_lengths, set->digit_ends, set->digit_count);
	set->memo = palloc_aligned_memo();

	MemoryContextSwitchTo(old);
	return set;
}

/* Does a needle of the set start at h[i]? */
static bool
match_at(NeedleSet *set, const unsigned char *h, int hlen, int i)
{
	int			c = ascii_lower(h[i]);
	int			c2 = i + 1 < hlen ? ascii_lower(h[i + 1]) : 0;
	int		   *sec = set->second[c];
	uint64		window;
	int			pass;
	int			j;

	if (sec == NULL)
		return false;
	/* the value's next 8 bytes (lower case, 0 past the end): most needles fail on these at once */
	window = lower8_at(h, hlen, i);
	/* pass 0: one-byte needles (second byte 0); pass 1: needles whose second byte is c2 */
	for (pass = 0; pass < 2; pass++)
	{
		int			want = pass == 0 ? 0 : c2;
		int			k;

		if (pass == 1 && want == 0)
			break;
		for (k = sec[want]; k < sec[want + 1]; k++)
		{
			int			idx;
			int			len;
			const char *needle;

			if ((window & set->prefix_mask[k]) != set->prefix[k])
				continue;
			idx = set->order[k];
			len = set->lengths[idx];
			needle = set->needles[idx];
			if (len > hlen - i)
				continue;
			if (set->word_start[idx] && i > 0 && is_word_byte(h[i - 1]))
				continue;
			for (j = 8; j < len; j++)
			{
				if (set->digit_keys && needle[j] == '?')
					continue;	/* digit sets search digits only: any byte is a digit */
				if (ascii_lower(h[i + j]) != (unsigned char) needle[j])
					break;
			}
			if (j < len)
				continue;
			if (set->word_end[idx] && i + len < hlen && is_word_byte(h[i + len]))
				continue;
			return true;
		}
	}
	return false;
}

/* Does needle k of the set occur at h[i], boundaries included? */
static bool
needle_at(NeedleSet *set, int k, const unsigned char *h, int hlen, int i)
{
	int			len = set->lengths[k];
	const unsigned char *n = (const unsigned char *) set->needles[k];
	int			j;

	if (i < 0 || len > hlen - i)
		return false;
	if (set->word_start[k] && i > 0 && word_byte[h[i - 1]])
		return false;
	for (j = 0; j < len; j++)
		if (ascii_lower(h[i + j]) != n[j])
			return false;
	return !(set->word_end[k] && i + len < hlen && word_byte[h[i + len]]);
}

/* The trigram of classes at h[i] (0 past the end). */
static inline int
text_gram_at(const unsigned char *h, int hlen, int i)
{
	return TEXT_GRAM(byte_class[h[i]], i + 1 < hlen ? byte_class[h[i + 1]] : 0,
					 i + 2 < hlen ? byte_class[h[i + 2]] : 0);
}

/*
 * Fullwidth forms (U+FF01..U+FF5E, "ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ") would slip past an ASCII
 * comparison: a search that meets one stops (NEEDS_FOLD) and runs again on the value folded to
 * ASCII. A match found before is a match in the folded value too (its boundaries are ASCII).
 */
#define NEEDS_FOLD (-1)

static inline bool
foldable_at(const unsigned char *h, int hlen, int i)
{
	return h[i] == 0xEF && i + 2 < hlen &&
		((h[i + 1] == 0xBC && h[i + 2] >= 0x81) || (h[i + 1] == 0xBD && h[i + 2] <= 0x9E)) &&
		h[i + 2] >= 0x80 && h[i + 2] <= 0xBF;
}

#ifdef __SSE2__
/*
 * The last 1..15 bytes of a value in a vector, zeros after them, from overlapping loads inside
 * the value (a buffer on the stack would stall the vector load).
 */
static inline __m128i
load_tail16(const unsigned char *h, int n)
{
	return _mm_set_epi64x((int64) (n > 8 ? load_upto8(h + 8, n - 8) : 0), (int64) load_upto8(h, n));
}
#endif

/*
 * Which of up to 64 bytes are word bytes (bit i: h[i]) and which are 0xEF (where fullwidth
 * forms start). Sixteen bytes at a time where SSE2 is there; nothing past the value is read
 * (a short tail is padded with zeros, and zero is no word byte).
 */
static inline void
classify_block(const unsigned char *h, int n, uint64 *word, uint64 *ef)
{
#ifdef __SSE2__
	const __m128i case_bit = _mm_set1_epi8(0x20);
	const __m128i letter_a = _mm_set1_epi8('a');
	const __m128i digit_0 = _mm_set1_epi8('0');
	const __m128i bias = _mm_set1_epi8((char) 0x80);
	const __m128i letters = _mm_set1_epi8((char) (0x80 + 26));
	const __m128i digits = _mm_set1_epi8((char) (0x80 + 10));
	const __m128i lead = _mm_set1_epi8((char) 0xEF);
	uint64		w = 0;
	uint64		e = 0;
	int			c;

	for (c = 0; c < n; c += 16)
	{
		__m128i		x;
		__m128i		is_word;

		if (n - c >= 16)
			x = _mm_loadu_si128((const __m128i *) (h + c));
		else
			x = load_tail16(h + c, n - c);
		/* unsigned range tests as signed ones: (b - lo) ^ 0x80 < 0x80 + width */
		is_word = _mm_or_si128(
			_mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(_mm_or_si128(x, case_bit), letter_a), bias), letters),
			_mm_or_si128(_mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(x, digit_0), bias), digits),
						 _mm_cmplt_epi8(x, _mm_setzero_si128())));	/* >= 0x80 */
		w |= (uint64) (uint32) _mm_movemask_epi8(is_word) << c;
		e |= (uint64) (uint32) _mm_movemask_epi8(_mm_cmpeq_epi8(x, lead)) << c;
	}
	*word = w;
	*ef = e;
#else
	uint64		w = 0;
	uint64		e = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		w |= (uint64) word_byte[h[i]] << i;
		e |= (uint64) (h[i] == 0xEF) << i;
	}
	*word = w;
	*ef = e;
#endif
}

/* The needles pivoting at h[p] (a byte between words), checked on the bytes before it first. */
static bool
pivot_match(NeedleSet *set, const unsigned char *h, int hlen, int p)
{
	int		   *idx = set->pivot_index[h[p]];
	int			a = ascii_lower(h[p - 1]);
	uint64		back;
	int			k;

	if (idx[a] == idx[a + 1])
		return false;
	back = lower8_before(h, p);
	for (k = idx[a]; k < idx[a + 1]; k++)
		if ((back & set->pivot_back_mask[k]) == set->pivot_back[k] &&
			needle_at(set, set->pivots[k], h, hlen, p - set->pivot_offsets[k]))
			return true;
	return false;
}

/*
 * The search of a sparse set: only word starts and the bytes between words are visited, found
 * 64 bytes at a time as bit masks.
 */
static int
search_sparse(NeedleSet *set, const unsigned char *h, int hlen)
{
	int			base;
	uint64		prev_word = 0;	/* the byte before the block is a word byte */

	for (base = 0; base < hlen; base += 64)
	{
		const unsigned char *b = h + base;
		int			n = Min(64, hlen - base);
		uint64		valid = n == 64 ? ~UINT64CONST(0) : (UINT64CONST(1) << n) - 1;
		uint64		word;
		uint64		ef;
		uint64		starts;
		uint64		between;

		classify_block(b, n, &word, &ef);
		while (unlikely(ef != 0))
		{
			if (foldable_at(h, hlen, base + pg_rightmost_one_pos64(ef)))
				return NEEDS_FOLD;
			ef &= ef - 1;
		}
		starts = word & ~((word << 1) | prev_word);
		between = ~word & valid;
		prev_word = (word >> (n - 1)) & 1;

		/* a word start: only '^' needles start here (others are found by their pivot) */
		for (; starts != 0; starts &= starts - 1)
		{
			int			p = base + pg_rightmost_one_pos64(starts);

			if (GRAM_HAS(set->start_grams, text_gram_at(h, hlen, p)) && match_at(set, h, hlen, p))
				return true;
		}
		/* a byte between words: needles can start here or pivot here */
		for (; between != 0; between &= between - 1)
		{
			int			p = base + pg_rightmost_one_pos64(between);

			if (GRAM_HAS(set->between_grams, text_gram_at(h, hlen, p)) && match_at(set, h, hlen, p))
				return true;
			if (p > 0 && set->pivot_index[h[p]] != NULL && pivot_match(set, h, hlen, p))
				return true;
		}
	}
	return false;
}

/* The search of a set of digit needles, in a value of digits only. */
static bool
search_digits(NeedleSet *set, const unsigned char *h, int hlen)
{
	uint32		key = 0;		/* DIGIT_GRAM of h[i..i+4), rolled along */
	int			i;

	for (i = 0; i < 4; i++)
		key = (key << 4) | (i < hlen ? DIGIT_CLASS(h[i]) : 0);
	for (i = 0; i <= hlen - set->min_length; i++)
	{
		if (GRAM_HAS(set->grams, key) && match_at(set, h, hlen, i))
			return true;
		key = ((key << 4) | (i + 4 < hlen ? DIGIT_CLASS(h[i + 4]) : 0)) & 0xFFFF;
	}
	return false;
}

/* One search of a value as it is: true, false or NEEDS_FOLD. */
static int
search_unfolded(NeedleSet *set, const unsigned char *h, int hlen)
{
	int			i;

	if (set->count == 0)
		;						/* digit needles only */
	else if (set->sparse)
	{
		int			found = search_sparse(set, h, hlen);

		if (found != false)
			return found;
	}
	else
	{
		int			k1 = hlen > 0 ? byte_class[h[0]] : 0;
		int			k2 = hlen > 1 ? byte_class[h[1]] : 0;

		if (hlen >= 3 && memchr(h, 0xEF, hlen) != NULL)
			for (i = 0; i < hlen; i++)
				if (foldable_at(h, hlen, i))
					return NEEDS_FOLD;
		for (i = 0; i < hlen; i++)
		{
			int			k3 = i + 2 < hlen ? byte_class[h[i + 2]] : 0;
			int			key = TEXT_GRAM(k1, k2, k3);

			if ((GRAM_HAS(set->grams, key) ||
				 (GRAM_HAS(set->start_grams, key) && (i == 0 || !word_byte[h[i - 1]]))) &&
				match_at(set, h, hlen, i))
				return true;
			k1 = k2;
			k2 = k3;
		}
	}

	if (set->digit_count > 0)
	{
		char		stackbuf[256];
		char	   *digits = hlen <= (int) sizeof(stackbuf) ? stackbuf : palloc(hlen);
		int			nd = 0;

		for (i = 0; i < hlen; i++)
		{
			if (h[i] >= '0' && h[i] <= '9')
				digits[nd++] = (char) h[i];
			else if (h[i] == 0xEF && foldable_at(h, hlen, i))
				return NEEDS_FOLD;
		}
		if (search_digits(set->digits, (const unsigned char *) digits, nd))
			return true;
	}
	return false;
}

/*
 * A value of 1..MEMO_MAX_LEN bytes as three words (whole 8-byte loads, the last one overlapping
 * the one before; zeros after the last one needed): two values of the same length are equal
 * when their words are.
 */
static inline void
memo_words(const unsigned char *h, int hlen, uint64 *w)
{
	int			k;

	w[1] = w[2] = 0;
	if (hlen < 8)
	{
		w[0] = load_upto8(h, hlen);
		return;
	}
	w[0] = load8(h);
	for (k = 1; 8 * k + 8 < hlen; k++)
		w[k] = load8(h + 8 * k);
	if (hlen > 8)
		w[k] = load8(h + hlen - 8);
}

static bool search_folding(NeedleSet *set, const unsigned char *h, int hlen);

/*
 * Does h[0..hlen) contain any needle of the set? Short values are looked up in the set's memo
 * first (a direct-mapped cache); while it hardly ever hits (unique values: e-mail addresses,
 * phone numbers) it is set aside for a while, so that it costs nothing there.
 */
static bool
search_needles(NeedleSet *set, const unsigned char *h, int hlen)
{
	uint64		w[3];
	uint64		x;
	MemoEntry  *e;
	bool		found;

	if (set->match_all)
		return true;
	if (hlen == 0 || hlen > MEMO_MAX_LEN || set->memo == NULL)
		return search_folding(set, h, hlen);
	if (set->memo_pause > 0)
	{
		set->memo_pause--;
		return search_folding(set, h, hlen);
	}
	if (++set->memo_lookups == MEMO_ROUND)
	{
		if (set->memo_hits < MEMO_ROUND / 8)
			set->memo_pause = MEMO_PAUSE;
		set->memo_lookups = set->memo_hits = 0;
	}
	memo_words(h, hlen, w);
	x = (w[0] * UINT64CONST(0x9E3779B97F4A7C15)) ^ (w[1] * UINT64CONST(0xC2B2AE3D27D4EB4F)) ^
		(w[2] * UINT64CONST(0x165667B19E3779F9)) ^ (uint64) hlen;
	e = &set->memo[(x ^ (x >> 29) ^ (x >> 47)) & (MEMO_SLOTS - 1)];
	if (e->len == hlen && e->words[0] == w[0] && e->words[1] == w[1] && e->words[2] == w[2])
	{
		set->memo_hits++;
		return e->found;
	}
	found = search_folding(set, h, hlen);
	memcpy(e->words, w, sizeof(w));
	e->len = hlen;
	e->found = found;
	return found;
}

/* The search of a value, folded to ASCII if it holds fullwidth forms. */
static bool
search_folding(NeedleSet *set, const unsigned char *h, int hlen)
{
	int			found;
	unsigned char *folded;
	int			n = 0;
	int			i;

	found = search_unfolded(set, h, hlen);
	if (found != NEEDS_FOLD)
		return found;

	folded = palloc(hlen);
	for (i = 0; i < hlen; i++)
	{
		if (foldable_at(h, hlen, i))
		{
			int			cp = 0xF000 | ((h[i + 1] & 0x3F) << 6) | (h[i + 2] & 0x3F);

			folded[n++] = (unsigned char) (cp - 0xFEE0);
			i += 2;
		}
		else
			folded[n++] = h[i];
	}
	found = search_unfolded(set, folded, n);
	pfree(folded);
	return found == true;
}

PG_FUNCTION_INFO_V1(pg_guardian_contains_any);

Datum
pg_guardian_contains_any(PG_FUNCTION_ARGS)
{
	text	   *haystack = PG_GETARG_TEXT_PP(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	NeedleRef  *ref = (NeedleRef *) fcinfo->flinfo->fn_extra;
	NeedleSet  *set = NULL;
	const unsigned char *h = (const unsigned char *) VARDATA_ANY(haystack);
	int			hlen = VARSIZE_ANY_EXHDR(haystack);

	if (ARR_NDIM(arr) > 1 || ARR_ELEMTYPE(arr) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("needles must be a one-dimensional text array")));

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

	PG_RETURN_BOOL(search_needles(set, h, hlen));
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
	int64		value;
} Baseline;

#define MAX_BASELINES 64
static Baseline baselines[MAX_BASELINES];
static bool suspect_seen = false;	/* a row passed the prefilter in this transaction */
static int	n_baselines = 0;
static bool callback_registered = false;

static void
reset_baselines(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		n_baselines = 0;
		suspect_seen = false;
	}
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

static void
check_statement_trigger(FunctionCallInfo fcinfo, const char *name)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be called as a statement-level trigger", name)));
}

PG_FUNCTION_INFO_V1(pg_guardian_activity_start);

Datum
pg_guardian_activity_start(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;

	check_statement_trigger(fcinfo, "guardian._activity_start()");
	trigdata = (TriggerData *) fcinfo->context;
	if (!callback_registered)
	{
		RegisterXactCallback(reset_baselines, NULL);
		callback_registered = true;
	}
	if (n_baselines < MAX_BASELINES)
	{
		Baseline   *b = &baselines[n_baselines++];

		b->relid = RelationGetRelid(trigdata->tg_relation);
		b->op = trigger_op(trigdata);
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

	check_statement_trigger(fcinfo, "guardian._activity_end()");
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
	if (rows > 1 || suspect_seen)
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
	return build_needles(arr, spec_cxt);
}

static void setup_reader(ColumnReader *r, ColumnSpec *col, Oid typid, MemoryContext cxt);

/* Is the type the citext extension's (whatever schema it lives in)? */
static bool
type_is_citext(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		result = strcmp(NameStr(((Form_pg_type) GETSTRUCT(tup))->typname), "citext") == 0;
		ReleaseSysCache(tup);
	}
	return result;
}

static TableSpec *
load_spec(Oid relid, bool any_mode)
{
	TableSpec  *spec;
	Oid			argtypes[2] = {OIDOID, BOOLOID};
	Datum		args[2];
	uint64		i;
	int			ret;

	if (!spec_callbacks)
	{
		spec_cxt = AllocSetContextCreate(TopMemoryContext, "pg_guardian prefilter specs",
										 ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(PROCOID, spec_proc_callback, (Datum) 0);
		CacheRegisterRelcacheCallback(spec_rel_callback, (Datum) 0);
		spec_callbacks = true;
	}
	if (n_specs >= MAX_SPECS)
		reset_specs();

	args[0] = ObjectIdGetDatum(relid);
	args[1] = BoolGetDatum(any_mode);
	if ((ret = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %d", ret);
	ret = SPI_execute_with_args(
		"SELECT attnum, is_uuid, anchors, bounds FROM guardian._prefilter_spec($1::pg_catalog.regclass, $2)",
		2, argtypes, args, NULL, true, 0);
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
	return search_needles(set, (const unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
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
		case READ_OUTPUT:
			{
				char	   *out = OutputFunctionCall(&r->output, value);
				bool		found = col->needles != NULL &&
					search_needles(col->needles, (const unsigned char *) out, strlen(out));

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

		if (!OidIsValid(relid))
			return false;		/* not a table's row: nothing is watched in it */
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
		suspect_seen = true;
	return found;
}

PG_FUNCTION_INFO_V1(pg_guardian_suspect);

Datum
pg_guardian_suspect(PG_FUNCTION_ARGS)
{
	HeapTupleHeader newtup = PG_GETARG_HEAPTUPLEHEADER(0);
	HeapTupleHeader oldtup = (PG_NARGS() > 1 && !PG_ARGISNULL(1)) ? PG_GETARG_HEAPTUPLEHEADER(1) : NULL;

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

Datum
pg_guardian_suspect_columns(PG_FUNCTION_ARGS)
{
	ColumnsCache *cache = (ColumnsCache *) fcinfo->flinfo->fn_extra;
	Oid			relid;
	int			npairs = (PG_NARGS() - 1) / 2;
	int			j;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	relid = PG_GETARG_OID(0);
	if (specs_stale)
		reset_specs();
	if (cache == NULL)
	{
		if (PG_NARGS() % 2 != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("guardian._suspect_columns takes a table and (attnum, value) pairs")));
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnsCache));
		cache->columns = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnSpec *) * (npairs + 1));
		cache->readers = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ColumnReader) * (npairs + 1));
		cache->npairs = npairs;
		fcinfo->flinfo->fn_extra = cache;
	}
	if (cache->generation != spec_generation || cache->relid != relid)
	{
		TableSpec  *spec = find_spec(relid, true);

		for (j = 0; j < npairs; j++)
		{
			int			attnum;
			int			k;

			if (get_fn_expr_argtype(fcinfo->flinfo, 1 + 2 * j) != INT4OID || PG_ARGISNULL(1 + 2 * j))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("guardian._suspect_columns: argument %d must be an integer attnum", 2 + 2 * j)));
			attnum = PG_GETARG_INT32(1 + 2 * j);
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
