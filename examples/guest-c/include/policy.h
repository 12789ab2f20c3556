/* The pieces of the C policy and the short names they share. The contract's types come from the
 * bindings wit-bindgen generates (replicaset_policy.h); this header only shortens their names. */
#ifndef GUEST_C_POLICY_H
#define GUEST_C_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replicaset_policy.h"

typedef replicaset_policy_string_t string_t;
typedef wasm_replicaset_policy_types_snapshot_t snapshot_t;
typedef wasm_replicaset_policy_types_pod_t pod_t;
typedef wasm_replicaset_policy_types_label_t label_t;
typedef wasm_replicaset_policy_types_list_label_t label_set_t;
typedef wasm_replicaset_policy_types_label_selector_t label_selector_t;
typedef wasm_replicaset_policy_types_replica_set_t replica_set_t;
typedef wasm_replicaset_policy_types_replica_set_status_t status_t;
typedef wasm_replicaset_policy_types_condition_t condition_t;
typedef wasm_replicaset_policy_types_plan_t plan_t;
typedef replicaset_policy_list_u32_t index_list_t;

#define NANOS_PER_SECOND 1000000000LL

/* --- text (view.c) --------------------------------------------------------------------------- */

/* A string literal as a contract string (not copied). */
string_t literal(const char *text);
/* Whether two strings hold the same bytes. */
bool string_eq(string_t a, string_t b);
/* Byte-wise order: negative, zero or positive. */
int string_cmp(string_t a, string_t b);
/* The text a span of the snapshot points at (in range: see check_snapshot). */
string_t span_text(const snapshot_t *snapshot, wasm_replicaset_policy_types_span_t span);
/* The value of `key` in a label set, or NULL. */
const string_t *label_value(const label_set_t *labels, string_t key);

/* Checks every span and index of the snapshot; on failure returns false and sets `why`. */
bool check_snapshot(const snapshot_t *snapshot, string_t *why);

/* Appends to a growing message: the only string building the policy does. */
typedef struct {
    uint8_t *bytes;
    size_t len;
    size_t cap;
} text_t;
void text_add(text_t *text, const char *part);
void text_add_string(text_t *text, string_t part);
string_t text_done(text_t *text);

/* --- selector (selector.c) ------------------------------------------------------------------- */

/* Validates the selector as upstream's labels.NewRequirement does; on failure returns false and
 * sets `why` (the text of the invalid-selector error). */
bool selector_valid(const label_selector_t *selector, string_t *why);
/* Whether a label set satisfies every requirement of a valid selector (all, when empty). */
bool selector_matches(const label_selector_t *selector, const label_set_t *labels);

/* --- status (status.c) ----------------------------------------------------------------------- */

/* Whether a pod is active: not Succeeded or Failed, not being deleted. */
bool pod_active(const pod_t *pod);
/* upstream calculateStatus without a scaling error: counts over the claimed pods, ReplicaFailure
 * removed. `fully_labeled[s]` says whether label set s holds every template label. */
status_t calculate_status(const snapshot_t *snapshot, const uint32_t *claimed, size_t count,
                          const bool *fully_labeled, int32_t terminating);
/* When to look again for a ready pod turning available (upstream's step 15). */
replicaset_policy_option_u64_t requeue_after(const snapshot_t *snapshot, const uint32_t *claimed,
                                             size_t count, const status_t *status);
/* The status after a failed scale: ReplicaFailure added, or the cached one kept. */
status_t status_after_scale_error(const replica_set_t *rs, const status_t *plan_status,
                                  string_t message, int64_t now);

/* --- victims (victims.c) --------------------------------------------------------------------- */

/* This policy's own rule: which `n` of the claimed pods a scale-down deletes, in order. */
index_list_t choose_victims(const snapshot_t *snapshot, const uint32_t *claimed, size_t count,
                            size_t n);

#endif
