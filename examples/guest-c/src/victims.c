/* This policy's own rule, where it differs from upstream: a scale-down takes pods from the node
 * that holds the most of this ReplicaSet's pods, one pod at a time, so that what remains is
 * spread across nodes (a node failure then costs the fewest replicas).
 *
 * In order:
 *   1. pods on no node go first (they run nowhere, so deleting them costs nothing);
 *   2. otherwise the node holding the most of the remaining claimed pods loses one (a tie goes
 *      to the node whose name sorts first);
 *   3. within that node: an unready pod before a ready one, then the newest (a pod without a
 *      creation time counts as newest), then the smaller uid.
 * Counting is over this ReplicaSet's own claimed pods, not the colocation counts of related
 * ReplicaSets that upstream's ranking uses. */
#include <stdlib.h>

#include "policy.h"

/* Whether pod `a` should go before pod `b` on the same node (rule 3). */
static bool goes_before(const snapshot_t *snapshot, const pod_t *a, const pod_t *b) {
    if (a->ready != b->ready) return !a->ready;
    int64_t created_a = a->creation_timestamp.is_some ? a->creation_timestamp.val : INT64_MAX;
    int64_t created_b = b->creation_timestamp.is_some ? b->creation_timestamp.val : INT64_MAX;
    if (created_a != created_b) return created_a > created_b;
    return string_cmp(span_text(snapshot, a->uid), span_text(snapshot, b->uid)) < 0;
}

/* The node that loses the next pod (rules 1 and 2), given how many claimed pods are left on
 * each; UINT32_MAX if none is left. */
static uint32_t crowded_node(const snapshot_t *snapshot, const uint32_t *left) {
    uint32_t best = UINT32_MAX;
    for (uint32_t node = 0; node < snapshot->nodes.len; node++) {
        if (left[node] == 0) continue;
        string_t name = snapshot->nodes.ptr[node].name;
        if (name.len == 0) return node;
        if (best == UINT32_MAX || left[node] > left[best] ||
            (left[node] == left[best] && string_cmp(name, snapshot->nodes.ptr[best].name) < 0)) {
            best = node;
        }
    }
    return best;
}

index_list_t choose_victims(const snapshot_t *snapshot, const uint32_t *claimed, size_t count, size_t n) {
    uint32_t *left = calloc(snapshot->nodes.len, sizeof(uint32_t));
    bool *taken = calloc(count, sizeof(bool));
    for (size_t i = 0; i < count; i++) {
        left[snapshot->pods.ptr[claimed[i]].node]++;
    }
    index_list_t victims = {malloc(n * sizeof(uint32_t)), 0};
    while (victims.len < n) {
        uint32_t node = crowded_node(snapshot, left);
        if (node == UINT32_MAX) break;
        size_t pick = count;
        for (size_t i = 0; i < count; i++) {
            const pod_t *pod = &snapshot->pods.ptr[claimed[i]];
            if (taken[i] || pod->node != node) continue;
            if (pick == count || goes_before(snapshot, pod, &snapshot->pods.ptr[claimed[pick]])) pick = i;
        }
        taken[pick] = true;
        left[node]--;
        victims.ptr[victims.len++] = claimed[pick];
    }
    return victims;
}
