/* threshold.c: the threshold-filter example processor in C, from docs/processor-abi.md and
 * docs/record-batch.md alone: no C library, no SDK, no imports.
 *
 * Keeps the records whose JSON value has a top-level numeric field (`field`, default "temp")
 * strictly above `min` and/or strictly below `max`, copied byte for byte; drops every other
 * record, including those without the field. The same parameters and, on flat sensor objects,
 * the same output as the Rust example `threshold-filter`.
 *
 * Build (Debian's clang and lld):
 *   clang --target=wasm32 -O2 -nostdlib -fno-builtin -Wl,--no-entry -o threshold.wasm threshold.c
 *
 * Where it is simpler than the Rust SDK: the JSON reader walks the top-level members and skips
 * nested values without checking their grammar, a key with escapes never matches, and a
 * number is decimal text converted exactly when its digits fit 2^53 and its exponent is within
 * 10^22 (every sensor reading), and otherwise within a few units in the last place. */

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int i32;

#define EXPORT(name) __attribute__((export_name(name)))

/* The heap: a bump allocator from the end of the data the linker laid out, growing memory a
 * page at a time. The host's buffers are never freed, as the ABI asks. */
extern u8 __heap_base;
static u32 heap_next = 0;

EXPORT("silt_alloc") u32 silt_alloc(u32 size) {
    if (heap_next == 0) heap_next = (u32)&__heap_base;
    u32 start = (heap_next + 7u) & ~7u;
    if (size > 0x7fffffffu - start) return 0;
    u32 end = start + size;
    u32 have = (u32)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        u32 pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (__SIZE_TYPE__)-1) return 0;
    }
    heap_next = end;
    return start;
}

EXPORT("silt_abi_version") i32 silt_abi_version(void) { return 1; }

/* Parameters, set by silt_init. */
static const u8 *field = (const u8 *)"temp";
static u32 field_len = 4;
static int has_min = 0, has_max = 0;
static double min_v, max_v;

static u32 slot_set(u32 result, const void *ptr, u32 len) {
    u32 *slot = (u32 *)result;
    slot[0] = (u32)ptr;
    slot[1] = len;
    return 0;
}

static i32 fail(u32 result, const char *message) {
    u32 n = 0;
    while (message[n]) n++;
    slot_set(result, message, n);
    return 1;
}

static int same(const u8 *a, u32 a_len, const char *b) {
    u32 i = 0;
    for (; i < a_len; i++)
        if (b[i] == 0 || a[i] != (u8)b[i]) return 0;
    return b[i] == 0;
}

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Parses JSON number text at p[0..len); returns the bytes used (0: not a number). */
static u32 parse_number(const u8 *p, u32 len, double *out) {
    u32 i = 0;
    int negative = 0;
    if (i < len && p[i] == '-') { negative = 1; i++; }
    if (i >= len || p[i] < '0' || p[i] > '9') return 0;
    u64 mantissa = 0;
    int exponent = 0, digits = 0;
    if (p[i] == '0') {
        i++;
    } else {
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
            if (digits < 19) { mantissa = mantissa * 10 + (u64)(p[i] - '0'); if (mantissa) digits++; }
            else exponent++;
        }
    }
    if (i < len && p[i] == '.') {
        i++;
        if (i >= len || p[i] < '0' || p[i] > '9') return 0;
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
            if (digits < 19) { mantissa = mantissa * 10 + (u64)(p[i] - '0'); if (mantissa) digits++; exponent--; }
        }
    }
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        int sign = 1, e = 0;
        if (i < len && (p[i] == '+' || p[i] == '-')) { if (p[i] == '-') sign = -1; i++; }
        if (i >= len || p[i] < '0' || p[i] > '9') return 0;
        for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) if (e < 100000) e = e * 10 + (p[i] - '0');
        exponent += sign * e;
    }
    double v = (double)mantissa;
    if (mantissa <= (1ull << 53) && exponent >= -22 && exponent <= 22) {
        v = exponent < 0 ? v / POW10[-exponent] : v * POW10[exponent];
    } else {
        for (; exponent > 0; exponent--) v *= 10.0;
        for (; exponent < 0; exponent++) v /= 10.0;
    }
    if (v - v != 0.0) return 0; /* beyond the range of a double: not a number, as in the SDK */
    *out = negative ? -v : v;
    return i;
}

static u32 skip_space(const u8 *p, u32 len, u32 i) {
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    return i;
}

/* Skips a string starting at its quote; returns the index after it (len: unterminated). */
static u32 skip_string(const u8 *p, u32 len, u32 i) {
    for (i++; i < len; i++) {
        if (p[i] == '\\') i++;
        else if (p[i] == '"') return i + 1;
    }
    return len;
}

/* Skips one value (nested ones by counting brackets outside strings). */
static u32 skip_value(const u8 *p, u32 len, u32 i) {
    if (i < len && p[i] == '"') return skip_string(p, len, i);
    u32 depth = 0;
    for (; i < len; i++) {
        u8 c = p[i];
        if (c == '"') { i = skip_string(p, len, i) - 1; continue; }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') { if (depth == 0) return i; depth--; if (depth == 0) return i + 1; }
        else if (c == ',' && depth == 0) return i;
    }
    return len;
}

/* The number at top-level field `field` of the object p[0..len), if any. */
static int field_number(const u8 *p, u32 len, double *out) {
    u32 i = skip_space(p, len, 0);
    if (i >= len || p[i] != '{') return 0;
    i++;
    for (;;) {
        i = skip_space(p, len, i);
        if (i >= len || p[i] != '"') return 0;
        u32 key = i + 1, end = skip_string(p, len, i);
        if (end >= len) return 0;
        u32 key_len = end - 1 - key;
        i = skip_space(p, len, end);
        if (i >= len || p[i] != ':') return 0;
        i = skip_space(p, len, i + 1);
        if (key_len == field_len) {
            u32 k = 0;
            while (k < key_len && p[key + k] == field[k]) k++;
            if (k == key_len) return parse_number(p + i, len - i, out) != 0;
        }
        i = skip_space(p, len, skip_value(p, len, i));
        if (i >= len || p[i] != ',') return 0;
        i++;
    }
}

static u32 read_u32(const u8 *p) { return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24; }

/* An unsigned LEB128 varint at *p; advances it. The host validated every record. */
static u64 varint(const u8 **p) {
    u64 v = 0;
    for (u32 shift = 0;; shift += 7) {
        u8 b = *(*p)++;
        v |= (u64)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
}

static int param_number(const u8 *text, u32 len, double *out) {
    return len > 0 && parse_number(text, len, out) == len;
}

EXPORT("silt_init") i32 silt_init(u32 params, u32 params_len, u32 result) {
    const u8 *p = (const u8 *)params;
    u32 count = params_len ? read_u32(p) : 0;
    p += 4;
    for (u32 n = 0; n < count; n++) {
        u32 key_len = read_u32(p);
        const u8 *key = p + 4;
        u32 value_len = read_u32(key + key_len);
        const u8 *value = key + key_len + 4;
        p = value + value_len;
        if (same(key, key_len, "field")) { field = value; field_len = value_len; }
        else if (same(key, key_len, "min")) {
            if (!param_number(value, value_len, &min_v)) return fail(result, "parameter `min` must be a finite number");
            has_min = 1;
        } else if (same(key, key_len, "max")) {
            if (!param_number(value, value_len, &max_v)) return fail(result, "parameter `max` must be a finite number");
            has_max = 1;
        } else return fail(result, "unknown parameter; this processor takes field, min and max");
    }
    if (!has_min && !has_max) return fail(result, "give --param min=..., --param max=... or both");
    if (has_min && has_max && min_v >= max_v) return fail(result, "parameter `max` must be above min");
    return 0;
}

static u8 *out = 0;
static u32 out_cap = 0;

EXPORT("silt_process") i32 silt_process(u32 batch, u32 batch_len, u32 result) {
    if (batch_len > out_cap) {
        out = (u8 *)silt_alloc(batch_len);
        if (!out) return fail(result, "out of memory for the output");
        out_cap = batch_len;
    }
    const u8 *b = (const u8 *)batch;
    u32 count = read_u32(b + 48);
    const u8 *p = b + 68;
    u32 kept = 0;
    for (u32 r = 0; r < count; r++) {
        const u8 *start = p;
        u64 length = varint(&p);
        const u8 *next = p + length;
        varint(&p); /* timestamp delta */
        u64 key_len = varint(&p);
        p += key_len;
        u64 value_len = varint(&p);
        double v;
        if (field_number(p, (u32)value_len, &v) && (!has_min || v > min_v) && (!has_max || v < max_v)) {
            for (const u8 *c = start; c < next; c++) out[kept++] = *c;
        }
        p = next;
    }
    slot_set(result, out, kept);
    return 0;
}
