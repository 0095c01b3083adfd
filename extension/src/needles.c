/*
 * needles.c: the search behind guardian._contains_any and the C prefilter (pg_guardian.c).
 *
 * A value contains a needle when the needle occurs in the value's folded text, comparing ASCII
 * letters case-insensitively. The folded text is what the precise rules see (guardian._normalize:
 * NFKC, lower(), white space runs as one space), with every character that is not ASCII standing
 * as one byte that is not part of a word, so that the search stays a superset of the rules
 * whatever the database's locale:
 *  - the value is put in Unicode NFKC (fullwidth "ｔｅｓｔ", "𝐞xample", "﹢", "⁵⁵⁵", ligatures and
 *    no-break spaces become what the rules see);
 *  - U+0130 (İ, whose lower case is ASCII) becomes lower('İ') for the database's collation;
 *  - runs of white space (ASCII \t \n \v \f \r \x1c-\x1f and space; U+0085, U+00A0, U+1680,
 *    U+180E, U+2000-U+200B, U+2028, U+2029, U+202F, U+205F, U+3000: every character that \s
 *    may match in some locale) become one space;
 *  - any other non-ASCII character becomes 0x7F (FOLD_OTHER): it may or may not be a letter to
 *    the rules' [[:alnum:]] (it is not in a C-locale database), so a word boundary is allowed
 *    next to it ("Fake—Person", "test\u0301").
 * A needle holding non-ASCII characters is also looked for in lower(NFKC(value)) with white
 * space collapsed the same way and non-ASCII characters kept (as word characters), when the
 * value has any. The SQL fallback of guardian._contains_any (00_matchers.sql) computes the same.
 *
 * Needles are lower-case anchors compiled from guardian.rules; an empty needle matches every
 * value (a rule without anchors). A needle may carry word-boundary marks: a leading '^' asks
 * that no letter or digit precede it, a trailing '$' that none follow it ("^test$" finds
 * "Test Clinic" but not "Celeste" or "Testa"). Bytes >= 0x80 of a needle count as letters.
 * A needle starting with '#' is looked for in the value's digits only ("#55501" finds
 * "(415) 555-0123"), so phone numbers match whatever their punctuation; in it '?' stands for
 * any digit and a trailing '$' asks that the digits end there ("#55501??$": 555-01XX at the end).
 * A needle holding white space other than single spaces can never match the folded text.
 *
 * The search is built for clean values, which are nearly all of them: most needles can only
 * start where a word starts or at a byte between words, so a search finds those positions 64
 * bytes at a time as bit masks and tests only them against a trigram bitmap before comparing
 * any needle (see NeedleSet). Sets with needles that may start anywhere inside a word test every
 * position against the bitmap instead. A plain-ASCII value is its own folded text (but for white
 * space runs, which matter only to needles holding a space): it is searched in place, and only a
 * value with non-ASCII bytes (or, for such needles, control characters or a double space before
 * its trailing spaces) is folded first. Short values that come again (names, clinics) are
 * answered from a small memo per set (see needles_search).
 *
 * This file needs nothing of a backend but palloc and src/common (unicode_normalize), so that
 * tests/c_harness builds it as a plain program, with sanitizers, against libpgcommon.
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include <limits.h>

#include "common/unicode_norm.h"
#include "mb/pg_wchar.h"
#include "port/pg_bitutils.h"
#include "port/pg_bswap.h"

#include "needles.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

bool		needles_utf8 = true;
needles_lower_function needles_lower = NULL;

#define MEMO_SLOTS 512			/* 16 kB a set */
#define MEMO_MAX_LEN 24
#define MEMO_ROUND 4096			/* lookups between two looks at the hit rate */
#define MEMO_PAUSE 65536		/* values searched without it when it hardly ever hits */

struct MemoEntry				/* 32 bytes: one cache line holds it whole */
{
	uint64		words[3];		/* the value's bytes, as memo_words() reads them */
	int32		len;			/* 0: empty slot */
	int32		found;
};

/* What a non-ASCII character (other than white space) folds to: no letter, digit or space. */
#define FOLD_OTHER 0x7F

static void index_grams(NeedleSet *set);
static void index_pivots(NeedleSet *set);
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

/* Can a needle never occur in a folded text (white space there is single spaces only)? */
static bool
never_matches(const char *s, int len)
{
	int			j;

	for (j = 0; j < len; j++)
	{
		unsigned char c = (unsigned char) s[j];

		if ((c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F) || (c == ' ' && j > 0 && s[j - 1] == ' '))
			return true;
	}
	return false;
}

/* Domain needles in byte order, a shorter one before the longer ones it begins. */
static int
compare_domains(const void *a, const void *b)
{
	const DomainNeedle *x = (const DomainNeedle *) a;
	const DomainNeedle *y = (const DomainNeedle *) b;
	int			c = memcmp(x->name, y->name, Min(x->len, y->len));

	return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Is h[0..n), lower-cased, one of the set's domains? (binary search, in compare_domains order) */
static bool
domain_listed(const NeedleSet *set, const unsigned char *h, int n)
{
	int			lo = 0;
	int			hi = set->domain_count - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;
		const DomainNeedle *d = &set->domains[mid];
		int			m = Min(d->len, n);
		int			c = 0;
		int			k;

		for (k = 0; k < m && c == 0; k++)
			c = (unsigned char) d->name[k] - (int) ascii_lower(h[k]);
		if (c == 0)
			c = (d->len > n) - (d->len < n);
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * The '@=' needles: the value's e-mail domain is the text after its last '@', without
 * trailing white space, '.' or '>'. It matches when it, or a parent domain (the text after
 * one of its dots), is a listed domain. A value with any non-ASCII byte matches whatever the
 * list: folding could make it any address (a full-width '＠' is an '@'); the precise rules
 * decide.
 */
static bool
domain_match(const NeedleSet *set, const unsigned char *h, int hlen)
{
	int			at = -1;
	int			end = hlen;
	int			p;

	for (p = 0; p < hlen; p++)
	{
		if (h[p] >= 0x80)
			return true;
		if (h[p] == '@')
			at = p;
	}
	if (at < 0)
		return false;
	while (end > at + 1 && (h[end - 1] == ' ' || (h[end - 1] >= '\t' && h[end - 1] <= '\r') ||
							(h[end - 1] >= 0x1C && h[end - 1] <= 0x1F) || h[end - 1] == '.' || h[end - 1] == '>'))
		end--;
	for (p = at + 1; p < end; p++)
		if ((p == at + 1 || h[p - 1] == '.') && domain_listed(set, h + p, end - p))
			return true;
	return false;
}

NeedleSet *
needles_build(char **elems, const int *elem_lengths, int n)
{
	NeedleSet  *set;
	int			i;
	int			counts[256] = {0};

	set = palloc0(sizeof(NeedleSet));
	set->needles = palloc0(sizeof(char *) * (n + 1));
	set->lengths = palloc0(sizeof(int) * (n + 1));
	set->word_start = palloc0(sizeof(bool) * (n + 1));
	set->word_end = palloc0(sizeof(bool) * (n + 1));
	set->digit_needles = palloc0(sizeof(char *) * (n + 1));
	set->digit_lengths = palloc0(sizeof(int) * (n + 1));
	set->digit_ends = palloc0(sizeof(bool) * (n + 1));
	set->order = palloc0(sizeof(int) * (n + 1));
	set->domains = palloc0(sizeof(DomainNeedle) * (n + 1));
	for (i = 0; i < n; i++)
	{
		int			len;
		int			j;
		char	   *s;
		const char *src;
		bool		start = false;
		bool		end = false;

		if (elems[i] == NULL)
			continue;
		len = elem_lengths[i];
		src = elems[i];
		if (len > 2 && src[0] == '@' && src[1] == '=')
		{
			s = palloc(len - 2);
			for (j = 2; j < len; j++)
				s[j - 2] = src[j];	/* written in lower case: one with capitals never matches */
			set->domains[set->domain_count].name = s;
			set->domains[set->domain_count].len = len - 2;
			set->domain_count++;
			continue;
		}
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
		if (never_matches(src, len))
			continue;
		s = palloc(len);
		for (j = 0; j < len; j++)
		{
			s[j] = (char) ascii_lower((unsigned char) src[j]);
			if (s[j] == ' ')
				set->has_space = true;
			if ((unsigned char) s[j] >= 0x80)
				set->has_nonascii = true;
		}
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
	if (set->domain_count > 1)
		qsort(set->domains, set->domain_count, sizeof(DomainNeedle), compare_domains);
	set->memo = palloc_aligned_memo();
	return set;
}
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
 * A search of a value as it is stops (NEEDS_FOLD) where it meets what folding would change: a
 * non-ASCII byte, or, when a needle holds a space, a control character or a double space before
 * the value's trailing spaces (char(n) pads with spaces: those need no folding). A match found
 * first stands only if nothing after it needs folding either (see matched()).
 */
#define NEEDS_FOLD (-1)

/* Is the value from byte 'from' on something folding would change (see NEEDS_FOLD)? */
static bool
needs_fold_from(const NeedleSet *set, const unsigned char *h, int hlen, int from)
{
	int			tail = hlen;
	int			i;

	if (set->has_space)
		while (tail > from && h[tail - 1] == ' ')
			tail--;
	for (i = from; i < hlen; i++)
	{
		unsigned char c = h[i];

		if (c >= 0x80)
			return true;
		if (set->has_space && (c < 0x20 || (c == ' ' && i < tail && i > 0 && h[i - 1] == ' ')))
			return true;
	}
	return false;
}

/* A match found with the value searched up to byte 'upto': true, or NEEDS_FOLD. */
static inline int
matched(const NeedleSet *set, const unsigned char *h, int hlen, int upto, bool folded)
{
	if (!folded && upto < hlen && needs_fold_from(set, h, hlen, upto))
		return NEEDS_FOLD;
	return true;
}

/*
 * Which of up to 64 bytes are word bytes (bit i: h[i]), which are >= 0x80 (high), which are
 * < 0x20 or >= 0x80 (low) and which are spaces. Sixteen bytes at a time where SSE2 is there;
 * nothing past the value is read (a short tail is padded with zeros: no word byte, no space,
 * not high; the caller masks them out of low).
 */
static inline void
classify_block(const unsigned char *h, int n, bool spaces, uint64 *word, uint64 *high, uint64 *low, uint64 *space)
{
#ifdef __SSE2__
	const __m128i case_bit = _mm_set1_epi8(0x20);
	const __m128i letter_a = _mm_set1_epi8('a');
	const __m128i digit_0 = _mm_set1_epi8('0');
	const __m128i bias = _mm_set1_epi8((char) 0x80);
	const __m128i letters = _mm_set1_epi8((char) (0x80 + 26));
	const __m128i digits = _mm_set1_epi8((char) (0x80 + 10));
	const __m128i blank = _mm_set1_epi8(' ');
	uint64		w = 0;
	uint64		hi = 0;
	uint64		lo = 0;
	uint64		sp = 0;
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
		hi |= (uint64) (uint32) _mm_movemask_epi8(x) << c;
		if (spaces)
		{
			lo |= (uint64) (uint32) _mm_movemask_epi8(_mm_cmplt_epi8(x, case_bit)) << c;	/* signed: < 0x20 or >= 0x80 */
			sp |= (uint64) (uint32) _mm_movemask_epi8(_mm_cmpeq_epi8(x, blank)) << c;
		}
	}
	*word = w;
	*high = hi;
	*low = lo;
	*space = sp;
#else
	uint64		w = 0;
	uint64		hi = 0;
	uint64		lo = 0;
	uint64		sp = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		w |= (uint64) word_byte[h[i]] << i;
		hi |= (uint64) (h[i] >= 0x80) << i;
		lo |= (uint64) (h[i] < 0x20 || h[i] >= 0x80) << i;
		sp |= (uint64) (h[i] == ' ') << i;
	}
	*word = w;
	*high = hi;
	*low = lo;
	*space = sp;
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
 * 64 bytes at a time as bit masks. Unless the value is already folded, a block holding what
 * folding would change stops the search (NEEDS_FOLD) before any of its bytes is looked at.
 */
static int
search_sparse(NeedleSet *set, const unsigned char *h, int hlen, bool folded)
{
	int			base;
	uint64		prev_word = 0;	/* the byte before the block is a word byte */
	uint64		prev_space = 0; /* the byte before the block is a space */
	int			tail = -1;		/* where the value's trailing spaces start, once needed */
	bool		spaces = set->has_space && !folded;

	for (base = 0; base < hlen; base += 64)
	{
		const unsigned char *b = h + base;
		int			n = Min(64, hlen - base);
		uint64		valid = n == 64 ? ~UINT64CONST(0) : (UINT64CONST(1) << n) - 1;
		uint64		word;
		uint64		high;
		uint64		low;
		uint64		space;
		uint64		starts;
		uint64		between;

		classify_block(b, n, spaces, &word, &high, &low, &space);
		if (!folded)
		{
			uint64		fold = high;

			if (spaces)
			{
				/* bit i: h[i] is a space after a space */
				uint64		pairs = space & ((space << 1) | prev_space);

				fold = low & valid;
				prev_space = (space >> (n - 1)) & 1;
				if (unlikely(pairs != 0))
				{
					/* but for those in the trailing spaces */
					int			keep;

					if (tail < 0)
						for (tail = hlen; tail > 0 && h[tail - 1] == ' '; tail--)
							;
					keep = tail - base;
					if (keep < 63)
						pairs &= keep < 0 ? 0 : (UINT64CONST(2) << keep) - 1;
					fold |= pairs;
				}
			}
			if (unlikely(fold != 0))
				return NEEDS_FOLD;
		}
		starts = word & ~((word << 1) | prev_word);
		between = ~word & valid;
		prev_word = (word >> (n - 1)) & 1;

		/* a word start: only '^' needles start here (others are found by their pivot) */
		for (; starts != 0; starts &= starts - 1)
		{
			int			p = base + pg_rightmost_one_pos64(starts);

			if (GRAM_HAS(set->start_grams, text_gram_at(h, hlen, p)) && match_at(set, h, hlen, p))
				return matched(set, h, hlen, base + n, folded);
		}
		/* a byte between words: needles can start here or pivot here */
		for (; between != 0; between &= between - 1)
		{
			int			p = base + pg_rightmost_one_pos64(between);

			if ((GRAM_HAS(set->between_grams, text_gram_at(h, hlen, p)) && match_at(set, h, hlen, p)) ||
				(p > 0 && set->pivot_index[h[p]] != NULL && pivot_match(set, h, hlen, p)))
				return matched(set, h, hlen, base + n, folded);
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


/* One search of a value as it is: true, false or (unless folded) NEEDS_FOLD. */
static int
search_unfolded(NeedleSet *set, const unsigned char *h, int hlen, bool folded)
{
	int			i;

	if (set->count == 0)
		;						/* digit needles only */
	else if (set->sparse)
	{
		int			found = search_sparse(set, h, hlen, folded);

		if (found != false)
			return found;
	}
	else
	{
		int			k1 = hlen > 0 ? byte_class[h[0]] : 0;
		int			k2 = hlen > 1 ? byte_class[h[1]] : 0;

		if (!folded && needs_fold_from(set, h, hlen, 0))
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
		bool		found;

		for (i = 0; i < hlen; i++)
		{
			if (h[i] >= '0' && h[i] <= '9')
				digits[nd++] = (char) h[i];
			else if (h[i] >= 0x80 && !folded)
			{
				if (digits != stackbuf)
					pfree(digits);
				return NEEDS_FOLD;	/* "⁵⁵⁵-0123", "𝟓𝟓𝟓": digits after NFKC */
			}
		}
		found = search_digits(set->digits, (const unsigned char *) digits, nd);
		if (digits != stackbuf)
			pfree(digits);
		if (found)
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
bool
needles_search(NeedleSet *set, const unsigned char *h, int hlen)
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

/*
 * Folding (see the header): white space that the precise rules' \s+ may collapse, in any
 * locale (PostgreSQL's regex \s is isspace() or iswspace() of the locale, or ICU's u_isspace()).
 * The SQL fallback (00_matchers.sql) lists the same characters.
 */
static inline bool
fold_space(pg_wchar c)
{
	if (c < 0x80)
		return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F);
	return c == 0x85 || c == 0xA0 || c == 0x1680 || c == 0x180E || (c >= 0x2000 && c <= 0x200B) ||
		c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

typedef struct Folded
{
	unsigned char *data;
	int			len;
	bool		in_space;		/* the last byte written is a space of a run */
} Folded;

static inline void
fold_put(Folded *f, pg_wchar c, bool keep)
{
	if (fold_space(c))
	{
		if (!f->in_space)
			f->data[f->len++] = ' ';
		f->in_space = true;
		return;
	}
	f->in_space = false;
	if (c < 0x80)
		f->data[f->len++] = (unsigned char) c;
	else if (!keep)
		f->data[f->len++] = FOLD_OTHER;
	else
	{
		unicode_to_utf8(c, f->data + f->len);
		f->len += pg_utf_mblen(f->data + f->len);
	}
}

/* The code points of UTF-8 text, 0-terminated (an ill-formed byte reads as U+FFFD). */
static pg_wchar *
decode_utf8(const unsigned char *s, int len, int *count)
{
	pg_wchar   *out = palloc(sizeof(pg_wchar) * (len + 1));
	int			i = 0;
	int			n = 0;

	while (i < len)
	{
		int			l = pg_utf_mblen(s + i);

		if (l < 1 || l > len - i || !pg_utf8_islegal(s + i, l))
		{
			out[n++] = 0xFFFD;
			i++;
			continue;
		}
		out[n++] = utf8_to_unicode(s + i);
		i += l;
	}
	out[n] = 0;
	*count = n;
	return out;
}

/* UTF-8 of code points (at most 4 bytes each), NUL-terminated. */
static unsigned char *
encode_utf8(const pg_wchar *cps, int n, int *len)
{
	unsigned char *out = palloc(4 * n + 1);
	int			k = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		unicode_to_utf8(cps[i], out + k);
		k += pg_utf_mblen(out + k);
	}
	out[k] = '\0';
	*len = k;
	return out;
}

/* NFKC of 0-terminated code points (the input itself when it is NFKC already), or NULL. */
static pg_wchar *
nfkc(pg_wchar *cps)
{
#ifndef FRONTEND
	if (unicode_is_normalized_quickcheck(UNICODE_NFKC, cps) == UNICODE_NORM_QC_YES)
		return cps;
#endif
	return unicode_normalize(UNICODE_NFKC, cps);	/* NULL only when out of memory, in frontend code */
}

static int
wchar_len(const pg_wchar *cps)
{
	int			n = 0;

	while (cps[n] != 0)
		n++;
	return n;
}

/* lower() of UTF-8 text as the server has it, or of its ASCII letters only (no server). */
static unsigned char *
lower_utf8(const unsigned char *s, int len, int *outlen)
{
	unsigned char *out;
	int			i;

	if (needles_lower != NULL)
	{
		out = (unsigned char *) needles_lower((const char *) s, len);
		*outlen = strlen((char *) out);
		return out;
	}
	out = palloc(len + 1);
	for (i = 0; i < len; i++)
		out[i] = ascii_lower(s[i]);
	out[len] = '\0';
	*outlen = len;
	return out;
}

/* lower('İ') for the database's collation ("i" with glibc, "i̇" with ICU), found once. */
static pg_wchar dotted_i[8];
static int	dotted_i_len = -1;

static void
find_dotted_i(void)
{
	static const unsigned char capital[] = {0xC4, 0xB0};
	unsigned char *lowered;
	int			len;
	pg_wchar   *cps;
	int			n;

	lowered = lower_utf8(capital, 2, &len);
	cps = decode_utf8(lowered, len, &n);
	n = Min(n, (int) lengthof(dotted_i));
	memcpy(dotted_i, cps, sizeof(pg_wchar) * n);
	dotted_i_len = n;
	pfree(cps);
	pfree(lowered);
}

/*
 * The folded text of a value (see the header): with keep_nonascii, lower(NFKC(value)) with
 * white space collapsed and non-ASCII characters kept; else NFKC(value) with İ lowered, white
 * space collapsed and other non-ASCII characters as FOLD_OTHER. NULL when out of memory.
 */
static unsigned char *
fold_value(const unsigned char *h, int hlen, bool keep_nonascii, int *outlen)
{
	Folded		f = {0};
	pg_wchar   *cps;
	pg_wchar   *norm;
	int			n;
	int			i;
	bool		ascii = true;

	for (i = 0; i < hlen && ascii; i++)
		ascii = h[i] < 0x80;
	if (ascii || !needles_utf8)
	{
		/* no NFKC to do (or no Unicode to do it with): white space and FOLD_OTHER only */
		f.data = palloc(hlen + 1);
		for (i = 0; i < hlen; i++)
		{
			if (h[i] < 0x80)
				fold_put(&f, h[i], false);
			else
			{
				f.in_space = false;
				f.data[f.len++] = keep_nonascii ? h[i] : FOLD_OTHER;
			}
		}
		*outlen = f.len;
		return f.data;
	}

	cps = decode_utf8(h, hlen, &n);
	norm = nfkc(cps);
	if (norm == NULL)
		return NULL;
	n = wchar_len(norm);
	if (keep_nonascii)
	{
		int			len;
		unsigned char *utf8 = encode_utf8(norm, n, &len);
		unsigned char *lowered = lower_utf8(utf8, len, &len);
		pg_wchar   *lcps = decode_utf8(lowered, len, &n);

		f.data = palloc(4 * n + 1);
		for (i = 0; i < n; i++)
			fold_put(&f, lcps[i], true);
		pfree(lcps);
		pfree(lowered);
		pfree(utf8);
	}
	else
	{
		if (dotted_i_len < 0)
			find_dotted_i();
		f.data = palloc((Max(dotted_i_len, 1)) * n + 1);
		for (i = 0; i < n; i++)
		{
			if (norm[i] == 0x130 && dotted_i_len > 0)
			{
				int			k;

				for (k = 0; k < dotted_i_len; k++)
					fold_put(&f, dotted_i[k], false);
			}
			else
				fold_put(&f, norm[i], false);
		}
	}
	if (norm != cps)
		pfree(norm);
	pfree(cps);
	*outlen = f.len;
	return f.data;
}

/* The search of a value: in place when folding would not change it, else in its folded text. */
static bool
search_folding(NeedleSet *set, const unsigned char *h, int hlen)
{
	int			found;
	unsigned char *folded;
	int			n;
	int			i;

	if (set->domain_count > 0 && domain_match(set, h, hlen))
		return true;
	found = search_unfolded(set, h, hlen, false);
	if (found != NEEDS_FOLD)
		return found;

	folded = fold_value(h, hlen, false, &n);
	if (folded == NULL)
		return true;			/* could not fold: let the precise rules look */
	found = search_unfolded(set, folded, n, true);
	pfree(folded);
	if (found != true && set->has_nonascii)
	{
		bool		nonascii = false;

		for (i = 0; i < hlen && !nonascii; i++)
			nonascii = h[i] >= 0x80;
		if (nonascii)
		{
			folded = fold_value(h, hlen, true, &n);
			if (folded == NULL)
				return true;
			found = search_unfolded(set, folded, n, true);
			pfree(folded);
		}
	}
	return found == true;
}
