/* The status to write and when to look again: upstream's calculateStatus, IsPodAvailable,
 * FindMinNextPodAvailabilityCheck, and the ReplicaFailure rules after a failed scale. Here the
 * C policy agrees with upstream exactly; only its victims differ. */
#include <stdlib.h>

#include "policy.h"

#define PHASE(name) WASM_REPLICASET_POLICY_TYPES_POD_PHASE_##name

static const char REPLICA_FAILURE[] = "ReplicaFailure";

bool pod_active(const pod_t *pod) {
    return pod->phase != PHASE(SUCCEEDED) && pod->phase != PHASE(FAILED) && !pod->deletion_timestamp.is_some;
}

/* Ready, and either no minReadySeconds or ready for at least that long (inclusive). */
static bool pod_available(const pod_t *pod, int32_t min_ready_seconds, int64_t now) {
    if (!pod->ready) return false;
    if (min_ready_seconds == 0) return true;
    return pod->ready_transition.is_some &&
           pod->ready_transition.val + (int64_t)min_ready_seconds * NANOS_PER_SECOND <= now;
}

/* The conditions of `from` without any of type `type`, in order, plus room for one more. */
static wasm_replicaset_policy_types_list_condition_t without(const wasm_replicaset_policy_types_list_condition_t *from,
                                                             string_t type) {
    wasm_replicaset_policy_types_list_condition_t kept = {malloc((from->len + 1) * sizeof(condition_t)), 0};
    for (size_t i = 0; i < from->len; i++) {
        if (!string_eq(from->ptr[i].condition_type, type)) {
            kept.ptr[kept.len++] = from->ptr[i];
        }
    }
    return kept;
}

status_t calculate_status(const snapshot_t *snapshot, const uint32_t *claimed, size_t count,
                          const bool *fully_labeled, int32_t terminating) {
    const replica_set_t *rs = &snapshot->replica_set;
    status_t status = rs->status;
    status.replicas = (int32_t)count;
    status.fully_labeled_replicas = 0;
    status.ready_replicas = 0;
    status.available_replicas = 0;
    for (size_t i = 0; i < count; i++) {
        const pod_t *pod = &snapshot->pods.ptr[claimed[i]];
        if (fully_labeled[pod->labels]) status.fully_labeled_replicas++;
        if (pod->ready) {
            status.ready_replicas++;
            if (pod_available(pod, rs->min_ready_seconds, snapshot->now)) status.available_replicas++;
        }
    }
    status.terminating_replicas.is_some = true;
    status.terminating_replicas.val = terminating;
    /* Without a scaling error upstream removes ReplicaFailure. */
    status.conditions = without(&rs->status.conditions, literal(REPLICA_FAILURE));
    return status;
}

replicaset_policy_option_u64_t requeue_after(const snapshot_t *snapshot, const uint32_t *claimed,
                                             size_t count, const status_t *status) {
    replicaset_policy_option_u64_t none = {false, 0};
    int32_t min_ready_seconds = snapshot->replica_set.min_ready_seconds;
    if (min_ready_seconds <= 0 || status->ready_replicas == status->available_replicas) {
        return none;
    }
    int64_t window = (int64_t)min_ready_seconds * NANOS_PER_SECOND;
    int64_t soonest = -1;
    for (size_t i = 0; i < count; i++) {
        const pod_t *pod = &snapshot->pods.ptr[claimed[i]];
        if (!pod->ready || !pod->ready_transition.is_some) continue;
        int64_t next = pod->ready_transition.val + window - snapshot->now;
        if (next > 0 && (soonest < 0 || next < soonest)) soonest = next;
    }
    replicaset_policy_option_u64_t after = {true, (uint64_t)(soonest > 0 ? soonest : window)};
    return after;
}

status_t status_after_scale_error(const replica_set_t *rs, const status_t *plan_status,
                                  string_t message, int64_t now) {
    status_t status = *plan_status;
    string_t type = literal(REPLICA_FAILURE);
    status.conditions = without(&plan_status->conditions, type);
    /* A ReplicaFailure already in the cached status is kept exactly, at its old position. */
    for (size_t at = 0; at < rs->status.conditions.len; at++) {
        if (string_eq(rs->status.conditions.ptr[at].condition_type, type)) {
            size_t position = at < status.conditions.len ? at : status.conditions.len;
            for (size_t i = status.conditions.len; i > position; i--) {
                status.conditions.ptr[i] = status.conditions.ptr[i - 1];
            }
            status.conditions.ptr[position] = rs->status.conditions.ptr[at];
            status.conditions.len++;
            return status;
        }
    }
    condition_t failure = {
        .condition_type = type,
        .status = literal("True"),
        .reason = literal(status.replicas < rs->replicas   ? "FailedCreate"
                          : status.replicas > rs->replicas ? "FailedDelete"
                                                           : ""),
        .message = message,
        .last_transition_time = {true, now},
    };
    status.conditions.ptr[status.conditions.len++] = failure;
    return status;
}
