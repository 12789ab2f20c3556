/* `spec.selector`: validated as upstream's labels.NewRequirement validates it (qualified-name
 * keys, label values, the four operators and their arity), and matched against label sets. */
#include "policy.h"

static bool is_alnum(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 bytes; empty only if `may_be_empty`. */
static bool is_name(const uint8_t *s, size_t len, bool may_be_empty) {
    if (len == 0) {
        return may_be_empty;
    }
    if (len > 63 || !is_alnum(s[0]) || !is_alnum(s[len - 1])) {
        return false;
    }
    for (size_t i = 1; i + 1 < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') {
            return false;
        }
    }
    return true;
}

/* A lowercase RFC 1123 subdomain of at most 253 bytes. */
static bool is_subdomain(const uint8_t *s, size_t len) {
    if (len == 0 || len > 253) {
        return false;
    }
    bool start_of_label = true;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        bool lower_alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (c == '.') {
            if (start_of_label || s[i - 1] == '-') return false;
            start_of_label = true;
        } else if (c == '-') {
            if (start_of_label) return false;
        } else if (lower_alnum) {
            start_of_label = false;
        } else {
            return false;
        }
    }
    return !start_of_label && s[len - 1] != '-';
}

/* `[prefix/]name`: upstream's IsQualifiedName. */
static bool is_qualified_name(string_t key) {
    for (size_t i = 0; i < key.len; i++) {
        if (key.ptr[i] == '/') {
            return is_subdomain(key.ptr, i) && is_name(key.ptr + i + 1, key.len - i - 1, false);
        }
    }
    return is_name(key.ptr, key.len, false);
}

static bool refuse(string_t *why, const char *before, string_t subject, const char *after) {
    text_t text = {0};
    text_add(&text, before);
    text_add_string(&text, subject);
    text_add(&text, after);
    *why = text_done(&text);
    return false;
}

static bool key_and_values_valid(string_t key, const replicaset_policy_list_string_t *values, string_t *why) {
    if (!is_qualified_name(key)) {
        return refuse(why, "key: Invalid value: \"", key,
                      "\": a label key must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 "
                      "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric");
    }
    for (size_t i = 0; values != NULL && i < values->len; i++) {
        if (!is_name(values->ptr[i].ptr, values->ptr[i].len, true)) {
            return refuse(why, "values: Invalid value: \"", values->ptr[i],
                          "\": a label value must be empty or at most 63 alphanumerics, '-', '_' or '.', starting and "
                          "ending with an alphanumeric");
        }
    }
    return true;
}

bool selector_valid(const label_selector_t *selector, string_t *why) {
    for (size_t i = 0; i < selector->match_labels.len; i++) {
        const label_t *label = &selector->match_labels.ptr[i];
        replicaset_policy_list_string_t one = {(string_t *)&label->value, 1};
        if (!key_and_values_valid(label->key, &one, why)) {
            return false;
        }
    }
    for (size_t i = 0; i < selector->match_expressions.len; i++) {
        const wasm_replicaset_policy_types_selector_requirement_t *r = &selector->match_expressions.ptr[i];
        bool set_based = string_eq(r->operator_, literal("In")) || string_eq(r->operator_, literal("NotIn"));
        bool existence = string_eq(r->operator_, literal("Exists")) || string_eq(r->operator_, literal("DoesNotExist"));
        if (!set_based && !existence) {
            return refuse(why, "\"", r->operator_, "\" is not a valid label selector operator");
        }
        if (!key_and_values_valid(r->key, &r->values, why)) {
            return false;
        }
        if (set_based && r->values.len == 0) {
            *why = literal("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty");
            return false;
        }
        if (existence && r->values.len != 0) {
            *why = literal("values: Invalid value: values set must be empty for exists and does not exist");
            return false;
        }
    }
    return true;
}

static bool contains(const replicaset_policy_list_string_t *values, const string_t *value) {
    for (size_t i = 0; value != NULL && i < values->len; i++) {
        if (string_eq(values->ptr[i], *value)) {
            return true;
        }
    }
    return false;
}

bool selector_matches(const label_selector_t *selector, const label_set_t *labels) {
    for (size_t i = 0; i < selector->match_labels.len; i++) {
        const string_t *value = label_value(labels, selector->match_labels.ptr[i].key);
        if (value == NULL || !string_eq(*value, selector->match_labels.ptr[i].value)) {
            return false;
        }
    }
    for (size_t i = 0; i < selector->match_expressions.len; i++) {
        const wasm_replicaset_policy_types_selector_requirement_t *r = &selector->match_expressions.ptr[i];
        const string_t *value = label_value(labels, r->key);
        bool holds;
        if (string_eq(r->operator_, literal("In"))) {
            holds = contains(&r->values, value);
        } else if (string_eq(r->operator_, literal("NotIn"))) {
            holds = !contains(&r->values, value);
        } else if (string_eq(r->operator_, literal("Exists"))) {
            holds = value != NULL;
        } else {
            holds = value == NULL;
        }
        if (!holds) {
            return false;
        }
    }
    return true;
}
