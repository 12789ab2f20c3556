//! Matches cached objects' labels against ReplicaSet selectors with the policy library's own
//! matcher, so the host's event mapping and the default policy can never disagree on a match.

use std::collections::BTreeMap;

use guest_replicaset::selector::Selector;
use k8s_openapi::api::apps::v1::ReplicaSet;

use crate::contract::{LabelSelector, native::Cross};

/// A ReplicaSet's selector, converted once for matching many label sets.
pub struct ReplicaSetSelector {
    selector: guest_replicaset::types::LabelSelector,
}

impl ReplicaSetSelector {
    /// The selector of `rs`.
    pub fn of(rs: &ReplicaSet) -> Self {
        Self { selector: LabelSelector::from(&rs.spec.selector).cross() }
    }

    /// Whether `labels` match (`metav1.LabelSelectorAsSelector` semantics: an empty selector
    /// matches everything); `None` when the selector is invalid.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> Option<bool> {
        let selector = Selector::from_label_selector(&self.selector).ok()?;
        Some(selector.matches_with(|key| labels.get(key).map(String::as_str)))
    }

    /// Whether the selector has no requirement at all.
    pub fn is_empty(&self) -> bool {
        self.selector.match_labels.is_empty() && self.selector.match_expressions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::labels;

    fn rs(selector: serde_json::Value) -> ReplicaSet {
        crate::testkit::rs("rs").selector(selector).build()
    }

    #[test]
    fn match_labels_and_expressions_both_apply() {
        let s = ReplicaSetSelector::of(&rs(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        })));
        assert_eq!(s.matches(&labels(&[("app", "web")])), Some(true));
        assert_eq!(s.matches(&labels(&[("app", "web"), ("tier", "db")])), Some(false));
        assert_eq!(s.matches(&labels(&[("app", "api")])), Some(false));
    }

    #[test]
    fn an_invalid_selector_matches_nothing_and_says_so() {
        let s = ReplicaSetSelector::of(&rs(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]})));
        assert_eq!(s.matches(&labels(&[("a", "b")])), None);
    }
}
