/* The component's exports: the reconcile pipeline (validate, claim, scale, status, requeue), in
 * upstream syncReplicaSet's order, and the status after a failed scale. Written against the C
 * bindings `wit-bindgen c` generates from wit/replicaset.wit; no libc, no WASI. */
#include <stdlib.h>

#include "policy.h"

#define CONTROLLER(name) WASM_REPLICASET_POLICY_TYPES_CONTROLLER_##name
#define REFUSE(name) WASM_REPLICASET_POLICY_TYPES_RECONCILE_ERROR_##name

/* Whether `labels` holds every template label (an empty template is held by all). */
static bool holds_all(const label_set_t *labels, const label_set_t *template) {
    for (size_t i = 0; i < template->len; i++) {
        const string_t *value = label_value(labels, template->ptr[i].key);
        if (value == NULL || !string_eq(*value, template->ptr[i].value)) return false;
    }
    return true;
}

/* Claims (upstream FilterActivePods + ClaimPods): which active pods the ReplicaSet keeps, adopts
 * and releases, and how many of its pods are terminating. */
typedef struct {
    index_list_t claimed, adopt, release;
    int32_t terminating;
} claims_t;

static claims_t claim_pods(const snapshot_t *snapshot, const bool *selected) {
    const replica_set_t *rs = &snapshot->replica_set;
    bool deleting = rs->deletion_timestamp.is_some;
    size_t pods = snapshot->pods.len;
    claims_t c = {{malloc(pods * 4), 0}, {malloc(pods * 4), 0}, {malloc(pods * 4), 0}, 0};
    for (uint32_t i = 0; i < pods; i++) {
        const pod_t *pod = &snapshot->pods.ptr[i];
        bool matches = selected[pod->labels];
        if (!pod_active(pod)) {
            bool finished = pod->phase == WASM_REPLICASET_POLICY_TYPES_POD_PHASE_SUCCEEDED ||
                            pod->phase == WASM_REPLICASET_POLICY_TYPES_POD_PHASE_FAILED;
            if (pod->controller == CONTROLLER(THIS_REPLICA_SET) && matches && !finished) c.terminating++;
            continue;
        }
        if (pod->controller == CONTROLLER(THIS_REPLICA_SET)) {
            if (matches) c.claimed.ptr[c.claimed.len++] = i;
            else if (!deleting) c.release.ptr[c.release.len++] = i;
        } else if (pod->controller == CONTROLLER(NONE) && !deleting && matches &&
                   string_eq(span_text(snapshot, pod->namespace_), rs->namespace_)) {
            c.adopt.ptr[c.adopt.len++] = i;
            c.claimed.ptr[c.claimed.len++] = i;
        }
    }
    return c;
}

static bool refuse(replicaset_policy_reconcile_error_t *err, uint8_t tag, string_t why) {
    err->tag = tag;
    err->val.invalid_selector = why; /* both cases hold one string */
    return false;
}

bool exports_replicaset_policy_reconcile(replicaset_policy_snapshot_t *snapshot, replicaset_policy_plan_t *ret,
                                         replicaset_policy_reconcile_error_t *err) {
    string_t why;
    if (!check_snapshot(snapshot, &why)) return refuse(err, REFUSE(INVALID_SNAPSHOT), why);
    const replica_set_t *rs = &snapshot->replica_set;
    if (!selector_valid(&rs->selector, &why)) return refuse(err, REFUSE(INVALID_SELECTOR), why);

    /* Pods of one ReplicaSet share a few label sets: match each set once, not each pod. */
    size_t sets = snapshot->label_sets.len;
    bool *selected = malloc(sets);
    bool *fully_labeled = malloc(sets);
    for (size_t s = 0; s < sets; s++) {
        selected[s] = selector_matches(&rs->selector, &snapshot->label_sets.ptr[s]);
        fully_labeled[s] = holds_all(&snapshot->label_sets.ptr[s], &snapshot->label_sets.ptr[rs->template_labels]);
    }
    claims_t c = claim_pods(snapshot, selected);

    /* Scale only with satisfied expectations and a ReplicaSet that is not being deleted, at most
     * the burst cap per sync. */
    plan_t plan = {.adopt = c.adopt, .release = c.release};
    int64_t diff = (int64_t)c.claimed.len - rs->replicas;
    if (snapshot->expectations_satisfied && !rs->deletion_timestamp.is_some && diff != 0) {
        int64_t want = diff < 0 ? -diff : diff;
        size_t n = (size_t)(want < snapshot->burst_replicas ? want : snapshot->burst_replicas);
        if (diff < 0) {
            plan.create = (uint32_t)n;
        } else {
            plan.delete_ = choose_victims(snapshot, c.claimed.ptr, c.claimed.len, n);
            replicaset_policy_string_t message = literal("scale-down: deleting from the most crowded node first");
            replicaset_policy_list_tuple2_string_string_t no_fields = {NULL, 0};
            replicaset_policy_log(WASM_REPLICASET_POLICY_TYPES_LEVEL_DEBUG, &message, &no_fields);
        }
    }
    plan.status = calculate_status(snapshot, c.claimed.ptr, c.claimed.len, fully_labeled, c.terminating);
    plan.requeue_after = requeue_after(snapshot, c.claimed.ptr, c.claimed.len, &plan.status);
    *ret = plan;
    return true;
}

void exports_replicaset_policy_status_after_scale_error(replicaset_policy_replica_set_t *replica_set,
                                                        replicaset_policy_replica_set_status_t *plan_status,
                                                        replicaset_policy_string_t *message,
                                                        replicaset_policy_timestamp_t now,
                                                        replicaset_policy_replica_set_status_t *ret) {
    *ret = status_after_scale_error(replica_set, plan_status, *message, now);
}
