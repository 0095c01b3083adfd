/*
 * harness.c: the prefilter's needle search (extension/src/needles.c) outside a server, built
 * with AddressSanitizer and UndefinedBehaviorSanitizer by tests/test_c_sanitizers.py.
 *
 * Every value is a malloc'd block of exactly its length (no NUL after it), so any read past a
 * value, which a server would hide inside a palloc chunk or a page, trips AddressSanitizer. Each
 * answer is compared with a naive search written from the definition in needles.c (folded text,
 * word boundaries, digit needles), over random needle sets and values: ASCII and Unicode forms
 * (no-break and other spaces, fullwidth, mathematical, superscript and small forms, ligatures,
 * combining marks, İ), controls, double and trailing spaces, ill-formed UTF-8, and values of
 * 1..300 bytes so that matches and fold triggers fall on either side of the 64-byte blocks.
 *
 * Usage: harness SEED ROUNDS. Prints "N passed, 0 failed" and exits 0, or prints the first
 * disagreement and exits 1.
 */
#include "postgres_fe.h"

#include "common/unicode_norm.h"
#include "mb/pg_wchar.h"

#include "needles.h"

/* xorshift64*: the same sequence for the same seed on every machine */
static uint64 rng_state;

static uint64
rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64CONST(2685821657736338717);
}

static int
rng_below(int n)
{
	return (int) (rng_next() % (uint64) n);
}

/* ---- the reference: the definition in needles.c, written the slow way ---- */

static bool
ref_space(pg_wchar c)
{
	static const pg_wchar other[] = {0x85, 0xA0, 0x1680, 0x180E, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
	int			i;

	if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F) || (c >= 0x2000 && c <= 0x200B))
		return true;
	for (i = 0; i < (int) lengthof(other); i++)
		if (c == other[i])
			return true;
	return false;
}

static bool
ref_word(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

static unsigned char
ref_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* code points of a value as the server would read it (ill-formed bytes as U+FFFD) */
static int
ref_decode(const unsigned char *s, int len, pg_wchar *out)
{
	int			i = 0;
	int			n = 0;

	while (i < len)
	{
		int			l = pg_utf_mblen(s + i);

		if (l >= 1 && l <= len - i && pg_utf8_islegal(s + i, l))
		{
			out[n++] = utf8_to_unicode(s + i);
			i += l;
		}
		else
		{
			out[n++] = 0xFFFD;
			i++;
		}
	}
	out[n] = 0;
	return n;
}

/*
 * The folded text: NFKC, İ as "i" (lower('İ') here, where lower() is ASCII only but for it),
 * white space runs as one space, other non-ASCII as 0x7F (keep: lower-cased ASCII, non-ASCII kept).
 */
static int
ref_fold(const unsigned char *h, int hlen, bool keep, unsigned char *out)
{
	pg_wchar   *cps = malloc(sizeof(pg_wchar) * (hlen + 1));
	pg_wchar   *norm;
	int			n = 0;
	int			i;
	bool		space = false;

	ref_decode(h, hlen, cps);
	for (i = 0; cps[i] != 0 && cps[i] < 0x80; i++)
		;
	/* NFKC leaves ASCII as it is (and libpgcommon's NFKC is slow: no need to wait for it there) */
	norm = cps[i] == 0 ? cps : unicode_normalize(UNICODE_NFKC, cps);
	for (i = 0; norm[i] != 0; i++)
	{
		pg_wchar	c = norm[i];

		if (ref_space(c))
		{
			if (!space)
				out[n++] = ' ';
			space = true;
			continue;
		}
		space = false;
		if (c == 0x130)
			out[n++] = 'i';
		else if (c < 0x80)
			out[n++] = keep ? ref_lower((unsigned char) c) : (unsigned char) c;
		else if (!keep)
			out[n++] = 0x7F;
		else
		{
			unicode_to_utf8(c, out + n);
			n += pg_utf_mblen(out + n);
		}
	}
	if (norm != cps)
		free(norm);
	free(cps);
	return n;
}

static bool
ref_text_at(const unsigned char *f, int flen, const char *needle, int len, bool start, bool end)
{
	int			i;
	int			j;

	for (i = 0; i + len <= flen; i++)
	{
		for (j = 0; j < len; j++)
			if (ref_lower(f[i + j]) != ref_lower((unsigned char) needle[j]))
				break;
		if (j < len)
			continue;
		if (start && i > 0 && ref_word(f[i - 1]))
			continue;
		if (end && i + len < flen && ref_word(f[i + len]))
			continue;
		return true;
	}
	return false;
}

static bool
ref_digits_at(const char *digits, int nd, const char *pat, int plen, bool end)
{
	int			i;
	int			j;

	for (i = 0; i + plen <= nd; i++)
	{
		for (j = 0; j < plen; j++)
			if (pat[j] != '?' && pat[j] != digits[i + j])
				break;
		if (j == plen && (!end || i + plen == nd))
			return true;
	}
	return false;
}

/* '@=' needles: the value's domain (after its last '@', without trailing white space, '.' or
 * '>'), in lower case, is the needle's domain (as written) or a sub-domain of it; a value with a
 * non-ASCII byte matches any. */
static bool
ref_domain(const char *domain, int dlen, const unsigned char *h, int hlen)
{
	int			at = -1;
	int			end = hlen;
	int			i;

	for (i = 0; i < hlen; i++)
		if (h[i] >= 0x80)
			return true;
	for (i = 0; i < hlen; i++)
		if (h[i] == '@')
			at = i;
	if (at < 0)
		return false;
	while (end > at + 1 && strchr(" \t\n\v\f\r\x1c\x1d\x1e\x1f.>", h[end - 1]) != NULL && h[end - 1] != 0)
		end--;
	for (i = at + 1; i <= end - dlen; i++)
	{
		int			k;
		bool		same = true;

		if (i != at + 1 && h[i - 1] != '.')
			continue;
		if (end - i != dlen)
			continue;
		for (k = 0; k < dlen && same; k++)
			same = ref_lower(h[i + k]) == (unsigned char) domain[k];
		if (same)
			return true;
	}
	return false;
}

static bool
ref_contains(char **needles, const int *lens, int count, const unsigned char *h, int hlen)
{
	unsigned char *f = malloc(18 * 4 * (hlen + 1));
	unsigned char *f2 = malloc(18 * 4 * (hlen + 1));
	char	   *digits = malloc(18 * (hlen + 1));
	int			flen = ref_fold(h, hlen, false, f);
	int			f2len = -1;
	int			nd = 0;
	bool		found = false;
	bool		value_nonascii = false;
	bool		set_nonascii = false;
	int			k;
	int			i;

	for (i = 0; i < hlen; i++)
		value_nonascii |= h[i] >= 0x80;
	for (k = 0; k < count; k++)
		for (i = 0; needles[k] != NULL && i < lens[k]; i++)
			set_nonascii |= (unsigned char) needles[k][i] >= 0x80;
	if (value_nonascii && set_nonascii)
		f2len = ref_fold(h, hlen, true, f2);
	for (i = 0; i < flen; i++)
		if (f[i] >= '0' && f[i] <= '9')
			digits[nd++] = (char) f[i];

	for (k = 0; k < count && !found; k++)
	{
		const char *s = needles[k];
		int			len = lens[k];
		bool		start = false;
		bool		end = false;

		if (s == NULL)
			continue;
		if (len > 2 && s[0] == '@' && s[1] == '=')
		{
			found = ref_domain(s + 2, len - 2, h, hlen);
			continue;
		}
		if (len > 1 && s[0] == '#')
		{
			char		pat[256];
			int			p = 0;
			bool		seen_digit = false;

			for (i = 1; i < len && p < (int) sizeof(pat); i++)
			{
				if (s[i] >= '0' && s[i] <= '9')
				{
					pat[p++] = s[i];
					seen_digit = true;
				}
				else if (s[i] == '?' && seen_digit)
					pat[p++] = '?';
			}
			found = p == 0 || ref_digits_at(digits, nd, pat, p, s[len - 1] == '$');
			continue;
		}
		if (len > 1 && s[0] == '^')
		{
			start = true;
			s++;
			len--;
		}
		if (len > 1 && s[len - 1] == '$')
		{
			end = true;
			len--;
		}
		found = len == 0 || ref_text_at(f, flen, s, len, start, end) ||
			(f2len >= 0 && ref_text_at(f2, f2len, s, len, start, end));
	}
	free(digits);
	free(f2);
	free(f);
	return found;
}

/* lower() as glibc has it, for the letters the tokens hold: ASCII, and İ to "i" */
static char *
harness_lower(const char *s, int len)
{
	char	   *out = palloc(len + 1);
	int			i = 0;
	int			n = 0;

	while (i < len)
	{
		if ((unsigned char) s[i] == 0xC4 && i + 1 < len && (unsigned char) s[i + 1] == 0xB0)
		{
			out[n++] = 'i';
			i += 2;
		}
		else
			out[n++] = (char) ref_lower((unsigned char) s[i++]);
	}
	out[n] = '\0';
	return out;
}

/* ---- random needle sets and values ---- */

static const char *const anchors[] = {
	"^test$", "^qa", "^tenant", "^demo$", "^xxx", "@example$", ".com$", "+test", "^'t use$", ".test$",
	"mailinator.com", "t use$", "a-a", "l.c", "est", "ail", "x", "^mail", "a", "t", "^q", "e$", "^x$",
	"#55501", "#0123", "#5", "#123", "#55501??$", "#5?5", "#4?", "#??12", "#0123$", "#1??$",
	"^test ", "^not a real", "^doe jr$", "^lorem$", "^example.com$", "+fixture", "^test+", "^test@",
	"^tenant$", "^jr$", "^bar$", "do not", "a b", "^müller$", "zoë", "ÉCOLE", "ıst", "é", "^é$",
	"^", "$", "#", "^$", "$$", "#?", "#a", "", "a\tb", "a  b", " ", "^ x", "x $", "\x7f", "İ",
	"@=mailinator.com", "@=example.com", "@=com", "@=gmail.com", "@=a", "@=MAIL", "@=", "@=x@a",
};

static const char *const ascii_tokens[] = {
	"test", "Test", "TEST", "Testa", "tester", "qa", "QA", "e2e", "demo", "Celeste", "contest", "mail",
	"mailinator", "mailinator.com", "notmailinator.com", "example", "example.com", "gmail.com",
	"tenant-a", "don't", "use", "not", "do", "a", "real", "doe", "jr", "lorem", "bar", "x", "xx", "xxx",
	"555", "0123", "4155550123", "5550", "12",
};

static const char *const other_tokens[] = {
	/* Unicode forms of the same */
	"Zoë", "ü", "Müller", "MÜLLER", "zoë", "école", "ÉCOLE", "ı", "İ", "TESTİNG", "ß", "Ωμέγα", "日本",
	"😀", "ｔｅｓｔ", "＠", "．", "ｃｏｍ", "１２３", "𝐞", "𝐭𝐞𝐬𝐭", "𝟓𝟓𝟓", "⁵⁵⁵", "₀₁₂₃", "﹢", "﹫",
	"ﬁ", "ﬀ", "ℌ", "Ⓣⓔⓢⓣ", "㏂", "\xc2\xa0", "\xe2\x80\x83", "\xe3\x80\x80", "\xe1\x9a\x80",
	"\xe2\x80\xa8", "\xc2\x85", "\xe2\x80\x8b", "\xcc\x81", "\xcc\x88", "\xe2\x80\x94", "\xe2\x80\x99",
	"e\xcc\x81", "t\xcc\x81", "\xef\xbc\xb4", "Ｔｅｓｔ", "ｑａ",
	/* controls, ill-formed UTF-8 */
	"\t", "\n", "\r", "\x1c", "\x01", "\x7f", "\xff", "\xc3", "\x80", "\xe2\x82", "\xf0\x9f\x98",
};

static const char *const separators[] = {
	" ", "", ".", "@", "+", "-", "_", "'", "(", ")", "/", "  ", "   ", "\t", " \t ", "\xc2\xa0", "\xe3\x80\x80",
};

static int
random_value(unsigned char *buf, int cap)
{
	int			n = 0;
	int			parts = rng_below(8);
	int			i;
	bool		unicode = rng_below(3) == 0;

	/* now and then a long run first, so that the rest falls in a later 64-byte block */
	if (rng_below(4) == 0)
	{
		int			pad = 40 + rng_below(120);
		const char *fill = rng_below(2) ? "a" : (rng_below(2) ? " " : "ab ");

		for (i = 0; i < pad && n < cap; i++)
			buf[n++] = (unsigned char) fill[i % strlen(fill)];
	}
	for (i = 0; i < parts; i++)
	{
		/* one value in three has other than ASCII tokens (folding them is what costs here) */
		const char *t = (unicode && rng_below(3) == 0) ? other_tokens[rng_below(lengthof(other_tokens))]
			: ascii_tokens[rng_below(lengthof(ascii_tokens))];
		const char *s = separators[rng_below(lengthof(separators))];

		if (n + strlen(t) + strlen(s) > (size_t) cap)
			break;
		memcpy(buf + n, t, strlen(t));
		n += strlen(t);
		memcpy(buf + n, s, strlen(s));
		n += strlen(s);
	}
	/* trailing spaces, as char(n) pads */
	if (rng_below(6) == 0)
		while (n < cap && rng_below(5) != 0)
			buf[n++] = ' ';
	/* and random bytes, now and then */
	if (unicode && rng_below(4) == 0)
		for (i = rng_below(6); i > 0 && n < cap; i--)
			buf[n++] = (unsigned char) (1 + rng_below(255));
	return n;
}

static int
check_set(char **needles, int *lens, int count, int values)
{
	NeedleSet  *set = needles_build(needles, lens, count);
	unsigned char buf[600];
	int			v;

	for (v = 0; v < values; v++)
	{
		int			len = random_value(buf, 300);
		unsigned char *h = malloc(len > 0 ? len : 1);
		bool		got;
		bool		want;
		int			repeat;

		memcpy(h, buf, len);
		want = ref_contains(needles, lens, count, h, len);
		/* twice: the second answer may come from the memo */
		for (repeat = 0; repeat < 2; repeat++)
		{
			got = needles_search(set, h, len);
			if (got != want)
			{
				int			k;
				int			i;

				printf("disagreement: search says %d, the definition %d\nvalue (%d bytes):", got, want, len);
				for (i = 0; i < len; i++)
					printf(" %02x", h[i]);
				printf("\nneedles:");
				for (k = 0; k < count; k++)
				{
					printf(" [");
					for (i = 0; needles[k] != NULL && i < lens[k]; i++)
						printf("%02x", (unsigned char) needles[k][i]);
					printf("]");
				}
				printf("\n");
				return 1;
			}
		}
		free(h);
	}
	return 0;
}

/*
 * Matches just before a 64-byte block ends, followed in the next block by what folding changes
 * (a combining mark that composes with the match's last letter, white space, a non-ASCII letter):
 * a match found in one block stands only if the rest of the value needs no folding.
 */
static int
check_block_edges(void)
{
	static const char *const sets[][4] = {
		{"mailinator.com", NULL}, {"^test$", "^clinic$"}, {"@example$", ".com$"}, {"t use$", "^not a real"},
		{"#55501??$", "#0123"}, {"^test ", "x"}, {"com", "<"},
	};
	static const char *const middles[] = {
		"x@mailinator.com", "Test Clinic", "x@example.com", "do not use", "(415) 555-0123", "test 5", "a<",
	};
	static const char *const tails[] = {
		"", "\xcc\x81", "\xcc\xb8", "\t", "  x", "\xc2\xa0use", "\xc3\xa9", "m", " ", "\xe2\x80\x83x",
	};
	unsigned char buf[400];
	int			count = 0;
	int			s;

	for (s = 0; s < (int) lengthof(sets); s++)
	{
		char	   *needles[4];
		int			lens[4];
		int			k;
		NeedleSet  *set;
		int			m;

		for (k = 0; k < 4 && sets[s][k] != NULL; k++)
		{
			needles[k] = (char *) sets[s][k];
			lens[k] = strlen(sets[s][k]);
		}
		set = needles_build(needles, lens, k);
		for (m = 0; m < (int) lengthof(middles); m++)
		{
			int			t;

			for (t = 0; t < (int) lengthof(tails); t++)
			{
				int			pad;

				for (pad = 0; pad < 130; pad = pad == 3 ? 46 : pad == 64 ? 112 : pad + 1)
				{
					int			n = 0;
					unsigned char *h;
					bool		want;
					bool		got;

					memset(buf, pad % 3 == 0 ? ' ' : 'a', pad);
					n = pad;
					memcpy(buf + n, middles[m], strlen(middles[m]));
					n += strlen(middles[m]);
					memcpy(buf + n, tails[t], strlen(tails[t]));
					n += strlen(tails[t]);
					h = malloc(n);
					memcpy(h, buf, n);
					want = ref_contains(needles, lens, k, h, n);
					got = needles_search(set, h, n);
					free(h);
					count++;
					if (got != want)
					{
						printf("disagreement at a block edge: search says %d, the definition %d: needles %s ..., value of %d bytes: %d x '%c', \"%s\", tail %d\n",
							   got, want, needles[0], n, pad, pad % 3 == 0 ? ' ' : 'a', middles[m], t);
						return -1;
					}
				}
			}
		}
	}
	return count;
}

int
main(int argc, char **argv)
{
	uint64		seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
	int			rounds = argc > 2 ? atoi(argv[2]) : 100;
	int			values = 0;
	int			r;

	rng_state = seed * UINT64CONST(0x9E3779B97F4A7C15) + 1;
	needles_lower = harness_lower;
	needles_utf8 = true;
	values = check_block_edges();
	if (values < 0)
	{
		printf("0 passed, 1 failed\n");
		return 1;
	}
	for (r = 0; r < rounds; r++)
	{
		char	   *needles[12];
		int			lens[12];
		int			count = 1 + rng_below(lengthof(needles));
		int			k;
		int			per_set = 400;

		for (k = 0; k < count; k++)
		{
			const char *a = anchors[rng_below(lengthof(anchors))];

			/* one needle in 13 is NULL (a NULL array element) */
			needles[k] = rng_below(13) == 0 ? NULL : strdup(a);
			lens[k] = needles[k] ? (int) strlen(a) : 0;
		}
		if (check_set(needles, lens, count, per_set) != 0)
		{
			printf("%d passed, 1 failed\n", values);
			return 1;
		}
		values += per_set;
		for (k = 0; k < count; k++)
			free(needles[k]);
	}
	printf("%d passed, 0 failed\n", values);
	return 0;
}
