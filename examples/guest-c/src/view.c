/* Reading the snapshot: span text, label lookup, and the one check of every span and index that
 * lets the rest of the policy read without checking again. */
#include <stdlib.h>
#include <string.h>

#include "policy.h"

string_t literal(const char *text) {
    string_t s = {(uint8_t *)text, strlen(text)};
    return s;
}

bool string_eq(string_t a, string_t b) {
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

int string_cmp(string_t a, string_t b) {
    size_t common = a.len < b.len ? a.len : b.len;
    int order = memcmp(a.ptr, b.ptr, common);
    if (order != 0) {
        return order;
    }
    return a.len < b.len ? -1 : (a.len > b.len ? 1 : 0);
}

string_t span_text(const snapshot_t *snapshot, wasm_replicaset_policy_types_span_t span) {
    string_t s = {snapshot->pod_strings.ptr + span.start, span.len};
    return s;
}

const string_t *label_value(const label_set_t *labels, string_t key) {
    for (size_t i = 0; i < labels->len; i++) {
        if (string_eq(labels->ptr[i].key, key)) {
            return &labels->ptr[i].value;
        }
    }
    return NULL;
}

void text_add_string(text_t *text, string_t part) {
    if (text->len + part.len > text->cap) {
        size_t cap = (text->cap * 2 > text->len + part.len) ? text->cap * 2 : text->len + part.len + 64;
        text->bytes = realloc(text->bytes, cap);
        text->cap = cap;
    }
    memcpy(text->bytes + text->len, part.ptr, part.len);
    text->len += part.len;
}

void text_add(text_t *text, const char *part) {
    text_add_string(text, literal(part));
}

string_t text_done(text_t *text) {
    string_t s = {text->bytes, text->len};
    return s;
}

static bool span_ok(const snapshot_t *snapshot, wasm_replicaset_policy_types_span_t span) {
    return (uint64_t)span.start + span.len <= snapshot->pod_strings.len;
}

/* Names the first bad field, e.g. "pods[3].node is out of range". */
static bool fail(string_t *why, const char *field, size_t pod) {
    text_t text = {0};
    text_add(&text, "pods[");
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + pod % 10);
        pod /= 10;
    } while (pod > 0);
    while (n > 0) {
        char one[2] = {digits[--n], 0};
        text_add(&text, one);
    }
    text_add(&text, "].");
    text_add(&text, field);
    text_add(&text, " is out of range");
    *why = text_done(&text);
    return false;
}

bool check_snapshot(const snapshot_t *snapshot, string_t *why) {
    if (snapshot->replica_set.template_labels >= snapshot->label_sets.len) {
        *why = literal("replica-set.template-labels is out of range");
        return false;
    }
    for (size_t i = 0; i < snapshot->pods.len; i++) {
        const pod_t *pod = &snapshot->pods.ptr[i];
        if (!span_ok(snapshot, pod->name)) return fail(why, "name", i);
        if (!span_ok(snapshot, pod->namespace_)) return fail(why, "namespace", i);
        if (!span_ok(snapshot, pod->uid)) return fail(why, "uid", i);
        if (pod->deletion_cost.is_some && !span_ok(snapshot, pod->deletion_cost.val)) return fail(why, "deletion-cost", i);
        if (pod->labels >= snapshot->label_sets.len) return fail(why, "labels", i);
        if (pod->node >= snapshot->nodes.len) return fail(why, "node", i);
    }
    return true;
}
