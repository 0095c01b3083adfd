/*
 * needles.h: the needle search of the prefilter (needles.c), with no dependence on the rest of
 * the server, so that tests/c_harness can build it with sanitizers outside a backend.
 */
#ifndef PG_GUARDIAN_NEEDLES_H
#define PG_GUARDIAN_NEEDLES_H

typedef struct MemoEntry MemoEntry;

typedef struct DomainNeedle
{
	char	   *name;			/* as written: lower case (rules' anchors are), else it never matches */
	int			len;
} DomainNeedle;

typedef struct NeedleSet
{
	/* set by the caller that caches sets (pg_guardian.c): the context and the array it came from */
	void	   *cxt;
	Size		array_len;
	char	   *array_copy;

	int			count;
	int			min_length;		/* of the shortest needle: no match starts later than this from the end */
	bool		match_all;		/* an empty needle: every value matches */
	bool		has_space;		/* a needle holds a space: white space runs in a value matter */
	bool		has_nonascii;	/* a needle holds a non-ASCII character */
	char	  **needles;
	int		   *lengths;
	bool	   *word_start;		/* '^': no word character before the match */
	bool	   *word_end;		/* '$': no word character after the match */
	int			digit_count;	/* '#' needles, matched against the digits only */
	char	  **digit_needles;
	int		   *digit_lengths;
	bool	   *digit_ends;		/* '$': the number's digits end with the needle */
	struct NeedleSet *digits;	/* the same needles, indexed like the others */
	/*
	 * '@=' needles: e-mail domains (a list of thousands, such as disposable mailbox providers).
	 * The value's domain, after its last '@', is looked up (and each parent domain) in this
	 * sorted array instead of searching the value for every one of them.
	 */
	int			domain_count;
	struct DomainNeedle *domains;
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
	 * Recent short values and whether they matched (see needles_search): names, clinics and
	 * cities repeat, and a repeated value is found here for less than a search costs.
	 */
	MemoEntry  *memo;
	uint32		memo_lookups;
	uint32		memo_hits;
	uint32		memo_pause;		/* values left to search without the memo */
} NeedleSet;

/* A set of needles (NULL entries are skipped), allocated in CurrentMemoryContext. */
extern NeedleSet *needles_build(char **needles, const int *lengths, int n);

/* Does the value contain any needle of the set (see needles.c for what that means)? */
extern bool needles_search(NeedleSet *set, const unsigned char *h, int hlen);

/*
 * What the search needs from the server, set by pg_guardian.c: whether values are UTF-8, and
 * lower() of a UTF-8 string for the database's default collation (a palloc'd, NUL-terminated
 * copy). Without it (NULL), only ASCII letters are lowered.
 */
typedef char *(*needles_lower_function) (const char *s, int len);
extern bool needles_utf8;
extern needles_lower_function needles_lower;

#endif							/* PG_GUARDIAN_NEEDLES_H */
