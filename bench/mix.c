/*
 * The standard content mix (see mix.h for what it is and why it is fixed).
 *
 * Planning is sequential and cheap (two PRNG draws per run); filling is
 * parallel: the page range is cut into chunks of VMIG_MIX_CHUNK pages that the
 * threads take from an atomic counter, and every page is generated from its
 * own PRNG seeded by (seed, page index), so the bytes never depend on the
 * thread count or on the order in which chunks are taken.
 */
#include "mix.h"
#include "prng.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE  VMIG_MIX_PAGE_SIZE
#define CHUNK 256u /* pages per unit of parallel work (1 MiB) */

/* ------------------------------------------------------------------ PRNGs */

struct xoshiro {
    uint64_t s[4];
};

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna, public domain algorithm). */
static inline uint64_t xoshiro_next(struct xoshiro *x)
{
    uint64_t *s = x->s;
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Distinct streams per purpose, so that text and random pages of the same
 * index, and the plan, never share a PRNG sequence. */
enum { SALT_PLAN = 0x504C414E, SALT_TEXT = 0x54455854, SALT_RANDOM = 0x52414E44 };

static void xoshiro_seed(struct xoshiro *x, uint64_t seed, uint64_t page, uint64_t salt)
{
    uint64_t st = mix64(seed ^ mix64(page * 0xD1B54A32D192ED03ull + salt));
    for (int i = 0; i < 4; i++)
        x->s[i] = splitmix64(&st); /* splitmix64 outputs are never all zero in a row of 4 */
}

/* ------------------------------------------------------------- parameters */

void vmig_mix_params_default(struct vmig_mix_params *p)
{
    p->seed = 1;
    p->pct[VMIG_MIX_ZERO] = 50;
    p->pct[VMIG_MIX_TEXT] = 25;
    p->pct[VMIG_MIX_RANDOM] = 25;
    p->page_size = PAGE;
}

const char *vmig_mix_params_check(const struct vmig_mix_params *p, char *msg, size_t msglen)
{
    bool have = msg && msglen;
    if (p->page_size != PAGE) {
        if (!have)
            return "mix page size must be 4096";
        snprintf(msg, msglen, "mix page size %u is not supported (must be %u)", p->page_size, PAGE);
        return msg;
    }
    for (int c = 0; c < VMIG_MIX_NCLASSES; c++) {
        if (p->pct[c] > 100) {
            if (!have)
                return "mix percentages must each be 0..100";
            snprintf(msg, msglen, "mix percentage of %s pages is %u, beyond 100",
                     vmig_mix_class_name((enum vmig_mix_class)c), p->pct[c]);
            return msg;
        }
    }
    unsigned sum = p->pct[0] + p->pct[1] + p->pct[2];
    if (sum != 100) {
        if (!have)
            return "mix percentages must sum to 100";
        snprintf(msg, msglen, "mix percentages %u+%u+%u (zero+text+random) sum to %u, not 100",
                 p->pct[0], p->pct[1], p->pct[2], sum);
        return msg;
    }
    return NULL;
}

int vmig_mix_params_parse_pct(struct vmig_mix_params *p, const char *text)
{
    unsigned v[VMIG_MIX_NCLASSES];
    const char *s = text;
    for (int c = 0; c < VMIG_MIX_NCLASSES; c++) {
        if (c > 0) {
            if (*s != '/')
                return -EINVAL;
            s++;
        }
        if (*s < '0' || *s > '9')
            return -EINVAL;
        unsigned long x = 0;
        while (*s >= '0' && *s <= '9') {
            x = x * 10 + (unsigned long)(*s++ - '0');
            if (x > 100)
                return -EINVAL;
        }
        v[c] = (unsigned)x;
    }
    if (*s != '\0' || v[0] + v[1] + v[2] != 100)
        return -EINVAL;
    memcpy(p->pct, v, sizeof(v));
    return 0;
}

const char *vmig_mix_class_name(enum vmig_mix_class c)
{
    switch (c) {
    case VMIG_MIX_ZERO:
        return "zero";
    case VMIG_MIX_TEXT:
        return "text";
    case VMIG_MIX_RANDOM:
        return "random";
    }
    return "?";
}

/* ------------------------------------------------------------------ plan */

struct vmig_mix_plan {
    uint64_t seed;
    uint64_t npages;
    uint64_t counts[VMIG_MIX_NCLASSES];
    size_t nruns;
    struct vmig_mix_run *runs;
};

/* round(npages * pct / 100) without overflow for any npages. */
static uint64_t share(uint64_t npages, unsigned pct)
{
    uint64_t q = npages / 100, r = npages % 100;
    return q * pct + (r * pct + 50) / 100;
}

void vmig_mix_counts(const struct vmig_mix_params *p, uint64_t npages,
                     uint64_t counts[VMIG_MIX_NCLASSES])
{
    /* Cumulative rounding: each class is within one page of its exact share
     * and the three always sum to npages. */
    uint64_t c0 = share(npages, p->pct[0]);
    uint64_t c01 = share(npages, p->pct[0] + p->pct[1]);
    counts[0] = c0;
    counts[1] = c01 - c0;
    counts[2] = npages - c01;
}

int vmig_mix_plan_create(const struct vmig_mix_params *p, uint64_t npages,
                         struct vmig_mix_plan **out)
{
    *out = NULL;
    if (vmig_mix_params_check(p, NULL, 0))
        return -EINVAL;
    struct vmig_mix_plan *plan = calloc(1, sizeof(*plan));
    if (!plan)
        return -ENOMEM;
    plan->seed = p->seed;
    plan->npages = npages;
    vmig_mix_counts(p, npages, plan->counts);

    /* Mean run length is 16 pages; start a little above that and grow. */
    size_t cap = (size_t)(npages / 14) + 16;
    plan->runs = malloc(cap * sizeof(*plan->runs));
    if (!plan->runs) {
        vmig_mix_plan_free(plan);
        return -ENOMEM;
    }

    uint64_t left[VMIG_MIX_NCLASSES];
    memcpy(left, plan->counts, sizeof(left));
    uint64_t total = npages, page = 0;
    uint64_t st = mix64(p->seed ^ SALT_PLAN);
    while (total > 0) {
        uint64_t r = splitmix64(&st) % total;
        uint32_t c = r < left[0] ? 0 : r < left[0] + left[1] ? 1 : 2;
        uint64_t len = 1 + splitmix64(&st) % VMIG_MIX_RUN_MAX;
        if (len > left[c])
            len = left[c];
        if (plan->nruns == cap) {
            size_t ncap = cap + cap / 2;
            struct vmig_mix_run *n = realloc(plan->runs, ncap * sizeof(*n));
            if (!n) {
                vmig_mix_plan_free(plan);
                return -ENOMEM;
            }
            plan->runs = n;
            cap = ncap;
        }
        plan->runs[plan->nruns++] =
            (struct vmig_mix_run){.first_page = page, .npages = (uint32_t)len, .cls = c};
        page += len;
        left[c] -= len;
        total -= len;
    }
    *out = plan;
    return 0;
}

void vmig_mix_plan_free(struct vmig_mix_plan *plan)
{
    if (!plan)
        return;
    free(plan->runs);
    free(plan);
}

uint64_t vmig_mix_plan_pages(const struct vmig_mix_plan *plan)
{
    return plan->npages;
}

const struct vmig_mix_run *vmig_mix_plan_runs(const struct vmig_mix_plan *plan, size_t *nruns)
{
    *nruns = plan->nruns;
    return plan->runs;
}

void vmig_mix_plan_counts(const struct vmig_mix_plan *plan, uint64_t counts[VMIG_MIX_NCLASSES])
{
    memcpy(counts, plan->counts, sizeof(plan->counts));
}

/* Index of the run containing page (page < npages). */
static size_t run_index(const struct vmig_mix_plan *plan, uint64_t page)
{
    size_t lo = 0, hi = plan->nruns; /* runs[lo].first_page <= page < runs[hi].first_page */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (plan->runs[mid].first_page <= page)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

enum vmig_mix_class vmig_mix_plan_class(const struct vmig_mix_plan *plan, uint64_t page)
{
    return (enum vmig_mix_class)plan->runs[run_index(plan, page)].cls;
}

/* ------------------------------------------------------------ text pages */

/*
 * Text is a stream of tokens: a word from a 512-entry vocabulary of common
 * English words followed by a separator. Word indices are skewed towards the
 * front of the table (index = u^2 / 2^23 for a uniform 16-bit u, a rough Zipf
 * law: "the" is about 1 word in 23); separators are mostly spaces, sometimes
 * ", ", ". " or ".\n"; thirteen vocabulary slots are numbers (1..4 random
 * decimal digits). Random words alone compress only 2.3x with zstd -1: real
 * text owes much of its redundancy to recurring phrases, so about one token
 * in nine (u >= REPEAT_FROM) instead repeats 2..5 earlier tokens of the same
 * page. REPEAT_FROM is tuned so that zstd -1 compresses text pages about 3x
 * (2.98x on 16384 pages of seed 1).
 *
 * One 64-bit draw gives three tokens (3 x 21 bits). Speed: each word is copied
 * with one fixed 16-byte memcpy (entries are padded to 16 bytes) and the
 * position advanced by its real length; only the last token of a page goes
 * through a small bounce buffer.
 */
#define REPEAT_FROM 58500u

struct word {
    char s[16];
    unsigned char len; /* 0: a number slot */
};
#define W(str)                                                                                     \
    {                                                                                              \
        str, sizeof(str) - 1                                                                       \
    }
static const struct word vocab[512] = {
    W("the"),      W("of"),       W("and"),      W("to"),       W("a"),        W("in"),
    W("is"),       W("it"),       W("you"),      W("that"),     W("he"),       W("was"),
    W("for"),      W("on"),       W("are"),      W("with"),     W("as"),       W("I"),
    W("his"),      W("they"),     W("be"),       W("at"),       W("one"),      W("have"),
    W("this"),     W("from"),     W("or"),       W("had"),      W("by"),       W("not"),
    W("word"),     W("but"),      W("what"),     W("some"),     W("we"),       W("can"),
    W("out"),      W("other"),    W(""),         W("were"),     W("all"),      W("there"),
    W("when"),     W("up"),       W("use"),      W("your"),     W("how"),      W("said"),
    W("an"),       W("each"),     W("she"),      W("which"),    W("do"),       W("their"),
    W("time"),     W("if"),       W("will"),     W("way"),      W("about"),    W("many"),
    W("then"),     W("them"),     W("write"),    W("would"),    W("like"),     W("so"),
    W("these"),    W("her"),      W("long"),     W("make"),     W("thing"),    W("see"),
    W("him"),      W("two"),      W("has"),      W("look"),     W("more"),     W(""),
    W("day"),      W("could"),    W("go"),       W("come"),     W("did"),      W("number"),
    W("sound"),    W("no"),       W("most"),     W("people"),   W("my"),       W("over"),
    W("know"),     W("water"),    W("than"),     W("call"),     W("first"),    W("who"),
    W("may"),      W("down"),     W("side"),     W("been"),     W("now"),      W("find"),
    W("any"),      W("new"),      W("work"),     W("part"),     W("take"),     W("get"),
    W("place"),    W("made"),     W("live"),     W("where"),    W("after"),    W("back"),
    W("little"),   W("only"),     W(""),         W("round"),    W("man"),      W("year"),
    W("came"),     W("show"),     W("every"),    W("good"),     W("me"),       W("give"),
    W("our"),      W("under"),    W("name"),     W("very"),     W("through"),  W("just"),
    W("form"),     W("sentence"), W("great"),    W("think"),    W("say"),      W("help"),
    W("low"),      W("line"),     W("differ"),   W("turn"),     W("cause"),    W("much"),
    W("mean"),     W("before"),   W("move"),     W("right"),    W("boy"),      W("old"),
    W("too"),      W("same"),     W("tell"),     W("does"),     W("set"),      W(""),
    W("three"),    W("want"),     W("air"),      W("well"),     W("also"),     W("play"),
    W("small"),    W("end"),      W("put"),      W("home"),     W("read"),     W("hand"),
    W("port"),     W("large"),    W("spell"),    W("add"),      W("even"),     W("land"),
    W("here"),     W("must"),     W("big"),      W("high"),     W("such"),     W("follow"),
    W("act"),      W("why"),      W("ask"),      W("men"),      W("change"),   W("went"),
    W("light"),    W("kind"),     W("off"),      W("need"),     W("house"),    W("picture"),
    W("try"),      W("us"),       W(""),         W("again"),    W("animal"),   W("point"),
    W("mother"),   W("world"),    W("near"),     W("build"),    W("self"),     W("earth"),
    W("father"),   W("head"),     W("stand"),    W("own"),      W("page"),     W("should"),
    W("country"),  W("found"),    W("answer"),   W("school"),   W("grow"),     W("study"),
    W("still"),    W("learn"),    W("plant"),    W("cover"),    W("food"),     W("sun"),
    W("four"),     W("between"),  W("state"),    W("keep"),     W("eye"),      W("never"),
    W("last"),     W("let"),      W("thought"),  W("city"),     W("tree"),     W(""),
    W("cross"),    W("farm"),     W("hard"),     W("start"),    W("might"),    W("story"),
    W("saw"),      W("far"),      W("sea"),      W("draw"),     W("left"),     W("late"),
    W("run"),      W("while"),    W("press"),    W("close"),    W("night"),    W("real"),
    W("life"),     W("few"),      W("north"),    W("open"),     W("seem"),     W("together"),
    W("next"),     W("white"),    W("children"), W("begin"),    W("got"),      W("walk"),
    W("example"),  W("ease"),     W("paper"),    W("group"),    W("always"),   W("music"),
    W("those"),    W("both"),     W(""),         W("mark"),     W("often"),    W("letter"),
    W("until"),    W("mile"),     W("river"),    W("car"),      W("feet"),     W("care"),
    W("second"),   W("book"),     W("carry"),    W("took"),     W("science"),  W("eat"),
    W("room"),     W("friend"),   W("began"),    W("idea"),     W("fish"),     W("mountain"),
    W("stop"),     W("once"),     W("base"),     W("hear"),     W("horse"),    W("cut"),
    W("sure"),     W("watch"),    W("color"),    W("face"),     W("wood"),     W("main"),
    W("enough"),   W("plain"),    W("girl"),     W("usual"),    W("young"),    W(""),
    W("ready"),    W("above"),    W("ever"),     W("red"),      W("list"),     W("though"),
    W("feel"),     W("talk"),     W("bird"),     W("soon"),     W("body"),     W("dog"),
    W("family"),   W("direct"),   W("pose"),     W("leave"),    W("song"),     W("measure"),
    W("door"),     W("product"),  W("black"),    W("short"),    W("numeral"),  W("class"),
    W("wind"),     W("question"), W("happen"),   W("complete"), W("ship"),     W("area"),
    W("half"),     W("rock"),     W("order"),    W("fire"),     W("south"),    W("problem"),
    W("piece"),    W("told"),     W(""),         W("knew"),     W("pass"),     W("since"),
    W("top"),      W("whole"),    W("king"),     W("space"),    W("heard"),    W("best"),
    W("hour"),     W("better"),   W("true"),     W("during"),   W("hundred"),  W("five"),
    W("remember"), W("step"),     W("early"),    W("hold"),     W("west"),     W("ground"),
    W("interest"), W("reach"),    W("fast"),     W("verb"),     W("sing"),     W("listen"),
    W("six"),      W("table"),    W("travel"),   W("less"),     W("morning"),  W("ten"),
    W("simple"),   W("several"),  W("vowel"),    W("toward"),   W("war"),      W(""),
    W("lay"),      W("against"),  W("pattern"),  W("slow"),     W("center"),   W("love"),
    W("person"),   W("money"),    W("serve"),    W("appear"),   W("road"),     W("map"),
    W("rain"),     W("rule"),     W("govern"),   W("pull"),     W("cold"),     W("notice"),
    W("voice"),    W("unit"),     W("power"),    W("town"),     W("fine"),     W("certain"),
    W("fly"),      W("fall"),     W("lead"),     W("cry"),      W("dark"),     W("machine"),
    W("note"),     W("wait"),     W("plan"),     W("figure"),   W("star"),     W("box"),
    W("noun"),     W("field"),    W(""),         W("rest"),     W("correct"),  W("able"),
    W("pound"),    W("done"),     W("beauty"),   W("drive"),    W("stood"),    W("contain"),
    W("front"),    W("teach"),    W("week"),     W("final"),    W("gave"),     W("green"),
    W("oh"),       W("quick"),    W("develop"),  W("ocean"),    W("warm"),     W("free"),
    W("minute"),   W("strong"),   W("special"),  W("mind"),     W("behind"),   W("clear"),
    W("tail"),     W("produce"),  W("fact"),     W("street"),   W("inch"),     W("multiply"),
    W("nothing"),  W("course"),   W("stay"),     W("wheel"),    W("full"),     W(""),
    W("force"),    W("blue"),     W("object"),   W("decide"),   W("surface"),  W("deep"),
    W("moon"),     W("island"),   W("foot"),     W("system"),   W("busy"),     W("test"),
    W("record"),   W("boat"),     W("common"),   W("gold"),     W("possible"), W("plane"),
    W("stead"),    W("dry"),      W("wonder"),   W("laugh"),    W("thousand"), W("ago"),
    W("ran"),      W("check"),    W("game"),     W("shape"),    W("equate"),   W("hot"),
    W("miss"),     W("brought"),  W("heat"),     W("snow"),     W("tire"),     W("bring"),
    W("yes"),      W("distant"),  W(""),         W("fill"),     W("east"),     W("paint"),
    W("language"), W("among"),
};
#undef W

/* Separator by 5 bits: 26/32 " ", 3/32 ", ", 2/32 ". ", 1/32 ".\n". */
static const char sep_text[32][2] = {
    " ", " ", " ", " ", " ", " ", " ", " ", " ", " ", " ",  " ",  " ",  " ",  " ",  " ",
    " ", " ", " ", " ", " ", " ", " ", " ", " ", " ", ", ", ", ", ", ", ". ", ". ", ".\n",
};
static const unsigned char sep_len[32] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2,
};

#define TOKEN_MAX 24 /* a token writes at most this many bytes at dst */

/* Writes one token at dst from 21 random bits (16 choose the word, 5 the
 * separator); returns its length. */
static inline unsigned emit_token(char *dst, unsigned bits, struct xoshiro *x)
{
    uint32_t u = bits & 0xFFFF;
    const struct word *w = &vocab[(u * u) >> 23];
    unsigned n = w->len;
    if (n) {
        memcpy(dst, w->s, 16);
    } else {
        uint64_t r = xoshiro_next(x);
        unsigned digits = 1 + (unsigned)(r & 3);
        r >>= 2;
        for (unsigned i = 0; i < digits; i++, r /= 10)
            dst[digits - 1 - i] = (char)('0' + r % 10);
        n = digits;
    }
    unsigned s = (bits >> 16) & 31;
    memcpy(dst + n, sep_text[s], 2);
    return n + sep_len[s];
}

static void text_page(uint64_t seed, uint64_t page, char *dst)
{
    struct xoshiro x;
    xoshiro_seed(&x, seed, page, SALT_TEXT);
    uint16_t starts[PAGE / 2 + 2]; /* token start offsets; tokens are >= 2 bytes */
    unsigned nt = 0;
    size_t pos = 0;
    uint64_t r = 0;
    unsigned left = 0; /* tokens left in r */
    while (pos < PAGE) {
        if (!left) {
            r = xoshiro_next(&x);
            left = 3;
        }
        unsigned bits = (unsigned)r & 0x1FFFFF;
        r >>= 21;
        left--;
        size_t n;
        starts[nt] = (uint16_t)pos;
        if ((bits & 0xFFFF) >= REPEAT_FROM && nt >= 8) {
            /* Repeat a phrase of 2..5 earlier tokens of this page. */
            uint64_t q = xoshiro_next(&x);
            unsigned k = 2 + (unsigned)(q & 3);
            unsigned j = (unsigned)(((q >> 2 & 0xFFFFFFFFu) * (nt - 1)) >> 32); /* < nt - 1 */
            if (j + k > nt)
                k = nt - j;
            n = starts[j + k] - starts[j];
            const char *src = dst + starts[j];
            char *d = dst + pos;
            if (pos - starts[j] >= 16 && pos + n + 16 <= PAGE) {
                /* Whole 16-byte blocks: may write up to 15 bytes beyond the
                 * phrase, which the next tokens overwrite. */
                for (size_t o = 0; o < n; o += 16)
                    memcpy(d + o, src + o, 16);
            } else {
                if (n > PAGE - pos)
                    n = PAGE - pos;
                memcpy(d, src, n); /* the phrase ends at or before pos */
            }
        } else if (pos <= PAGE - TOKEN_MAX) {
            n = emit_token(dst + pos, bits, &x);
        } else {
            char tmp[TOKEN_MAX];
            n = emit_token(tmp, bits, &x);
            if (n > PAGE - pos)
                n = PAGE - pos;
            memcpy(dst + pos, tmp, n);
        }
        pos += n;
        nt++;
    }
}

/* ---------------------------------------------------------- random pages */

static void random_page(uint64_t seed, uint64_t page, char *dst)
{
    struct xoshiro x;
    xoshiro_seed(&x, seed, page, SALT_RANDOM);
    uint64_t w[PAGE / 8];
    for (size_t i = 0; i < PAGE / 8; i++)
        w[i] = xoshiro_next(&x);
    if (w[0] == 0)
        w[0] = 1; /* never an all-zero page, whatever the PRNG says */
    memcpy(dst, w, PAGE);
}

void vmig_mix_page_fill(uint64_t seed, enum vmig_mix_class c, uint64_t page, void *dst)
{
    switch (c) {
    case VMIG_MIX_TEXT:
        text_page(seed, page, dst);
        break;
    case VMIG_MIX_RANDOM:
        random_page(seed, page, dst);
        break;
    default:
        memset(dst, 0, PAGE);
        break;
    }
}

/* ------------------------------------------------------------------ fill */

struct fill_job {
    const struct vmig_mix_plan *plan;
    char *buf;           /* receives page first_page */
    uint64_t first_page; /* window [first_page, end_page) */
    uint64_t end_page;
    unsigned flags;
    atomic_uint_fast64_t next_chunk; /* chunks handed out so far */
};

/* Fills pages [a, b) of the image (inside the job's window). */
static void fill_range(const struct fill_job *job, uint64_t a, uint64_t b)
{
    const struct vmig_mix_plan *plan = job->plan;
    size_t ri = run_index(plan, a);
    uint64_t page = a;
    while (page < b) {
        const struct vmig_mix_run *run = &plan->runs[ri++];
        uint64_t end = run->first_page + run->npages;
        if (end > b)
            end = b;
        char *dst = job->buf + (page - job->first_page) * PAGE;
        if (run->cls == VMIG_MIX_ZERO) {
            if (job->flags & VMIG_MIX_WRITE_ZEROS)
                memset(dst, 0, (end - page) * PAGE);
        } else {
            for (uint64_t p = page; p < end; p++, dst += PAGE)
                vmig_mix_page_fill(plan->seed, (enum vmig_mix_class)run->cls, p, dst);
        }
        page = end;
    }
}

static void *fill_worker(void *arg)
{
    struct fill_job *job = arg;
    for (;;) {
        uint64_t k = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed);
        uint64_t a = job->first_page + k * CHUNK;
        if (a >= job->end_page || a < job->first_page)
            return NULL;
        uint64_t b = job->end_page - a < CHUNK ? job->end_page : a + CHUNK;
        fill_range(job, a, b);
    }
}

#define MAX_THREADS 256

int vmig_mix_plan_fill(const struct vmig_mix_plan *plan, void *buf, uint64_t first_page,
                       uint64_t npages, unsigned nthreads, unsigned flags)
{
    if ((flags & ~VMIG_MIX_WRITE_ZEROS) || first_page > plan->npages ||
        npages > plan->npages - first_page)
        return -EINVAL;
    if (npages == 0)
        return 0;
    if (nthreads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = n > 0 ? (unsigned)n : 1;
    }
    uint64_t nchunks = (npages + CHUNK - 1) / CHUNK;
    if (nthreads > nchunks)
        nthreads = (unsigned)nchunks;
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;

    struct fill_job job = {
        .plan = plan,
        .buf = buf,
        .first_page = first_page,
        .end_page = first_page + npages,
        .flags = flags,
    };
    atomic_init(&job.next_chunk, 0);
    if (nthreads <= 1) {
        fill_range(&job, job.first_page, job.end_page);
        return 0;
    }
    /* The caller's thread is worker 0; a thread that cannot be created only
     * costs speed, since the others take its chunks. */
    pthread_t tids[MAX_THREADS];
    unsigned started = 0;
    for (unsigned i = 1; i < nthreads; i++) {
        if (pthread_create(&tids[started], NULL, fill_worker, &job) != 0)
            break;
        started++;
    }
    fill_worker(&job);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    return 0;
}

int vmig_mix_fill(const struct vmig_mix_params *p, void *buf, size_t len, unsigned nthreads,
                  unsigned flags)
{
    if (len % PAGE)
        return -EINVAL;
    struct vmig_mix_plan *plan;
    int rc = vmig_mix_plan_create(p, len / PAGE, &plan);
    if (rc)
        return rc;
    rc = vmig_mix_plan_fill(plan, buf, 0, len / PAGE, nthreads, flags);
    vmig_mix_plan_free(plan);
    return rc;
}
