//! `spec.selector` as a label matcher: `metav1.LabelSelectorAsSelector`, its validation, matching.
//!
//! Conversion validates the way upstream's `labels.NewRequirement` does: every key must be a
//! qualified name, every value a valid label value, `In`/`NotIn` need at least one value,
//! `Exists`/`DoesNotExist` none, and any other operator is refused. The error text follows
//! upstream's `field.Error` wording so the host's log reads like kube-controller-manager's.
//!
//! Matching is evaluated once per interned label set (see [`crate::reconcile`]), never per pod.

use crate::types::{Label, LabelSelector, ReconcileError};
use crate::view::label_value;

/// Longest name part of a qualified name and longest label value (`validation` package).
const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain, the optional prefix of a qualified name.
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and \
     end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation \
     is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
     characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex \
     used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', \
     '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
     '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// A validated label selector borrowing its keys and values from the ReplicaSet.
#[derive(Debug)]
pub struct Selector<'a> {
    requirements: Vec<Requirement<'a>>,
}

/// One requirement; every one must hold for a label set to match (upstream `labels.Requirement`).
#[derive(Debug)]
enum Requirement<'a> {
    /// From `matchLabels`: the key is present with exactly this value.
    Equals { key: &'a str, value: &'a str },
    /// The key is present with one of the values.
    In { key: &'a str, values: &'a [String] },
    /// The key is absent, or present with none of the values.
    NotIn { key: &'a str, values: &'a [String] },
    /// The key is present, with any value.
    Exists { key: &'a str },
    /// The key is absent.
    DoesNotExist { key: &'a str },
}

impl<'a> Selector<'a> {
    /// Mirrors `metav1.LabelSelectorAsSelector`: `matchLabels` first, then `matchExpressions`,
    /// failing on the first invalid requirement. An empty selector matches everything.
    pub fn from_label_selector(selector: &'a LabelSelector) -> Result<Self, ReconcileError> {
        let mut requirements = Vec::with_capacity(selector.match_labels.len() + selector.match_expressions.len());
        for label in &selector.match_labels {
            let mut errs = Vec::new();
            validate_label_key(&label.key, &mut errs);
            validate_label_value(&label.key, 0, &label.value, &mut errs);
            check(errs)?;
            requirements.push(Requirement::Equals { key: &label.key, value: &label.value });
        }
        for expr in &selector.match_expressions {
            let key = expr.key.as_str();
            let values = expr.values.as_slice();
            let requirement = match expr.operator.as_str() {
                "In" => Requirement::In { key, values },
                "NotIn" => Requirement::NotIn { key, values },
                "Exists" => Requirement::Exists { key },
                "DoesNotExist" => Requirement::DoesNotExist { key },
                other => {
                    return Err(ReconcileError::InvalidSelector(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            // labels.NewRequirement: key, then the operator's arity, then every value.
            let mut errs = Vec::new();
            validate_label_key(key, &mut errs);
            match requirement {
                Requirement::In { .. } | Requirement::NotIn { .. } if values.is_empty() => errs.push(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    go_string_slice(values)
                )),
                Requirement::Exists { .. } | Requirement::DoesNotExist { .. } if !values.is_empty() => {
                    errs.push(format!(
                        "values: Invalid value: {}: values set must be empty for exists and does not exist",
                        go_string_slice(values)
                    ));
                }
                _ => {}
            }
            for (i, value) in values.iter().enumerate() {
                validate_label_value(key, i, value, &mut errs);
            }
            check(errs)?;
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// Whether a label set satisfies every requirement (true for the empty selector).
    pub fn matches(&self, labels: &[Label]) -> bool {
        self.matches_with(|key| label_value(labels, key))
    }

    /// [`Selector::matches`] over any label storage: `value_of(key)` returns the label's value.
    /// The host matches its cached pods' label maps with it.
    pub fn matches_with<'l>(&self, value_of: impl Fn(&str) -> Option<&'l str>) -> bool {
        self.requirements.iter().all(|requirement| requirement.matches(&value_of))
    }
}

impl Requirement<'_> {
    fn matches<'l>(&self, value_of: &impl Fn(&str) -> Option<&'l str>) -> bool {
        match *self {
            Requirement::Equals { key, value } => value_of(key) == Some(value),
            Requirement::In { key, values } => value_of(key).is_some_and(|v| contains(values, v)),
            Requirement::NotIn { key, values } => !value_of(key).is_some_and(|v| contains(values, v)),
            Requirement::Exists { key } => value_of(key).is_some(),
            Requirement::DoesNotExist { key } => value_of(key).is_none(),
        }
    }
}

fn contains(values: &[String], value: &str) -> bool {
    values.iter().any(|v| v == value)
}

/// Mirrors `field.ErrorList.ToAggregate().Error()`: one message alone, several in brackets.
fn check(errs: Vec<String>) -> Result<(), ReconcileError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(ReconcileError::InvalidSelector(errs.into_iter().next().unwrap_or_default())),
        _ => Err(ReconcileError::InvalidSelector(format!("[{}]", errs.join(", ")))),
    }
}

/// Mirrors `validateLabelKey`: the key must be a qualified name.
fn validate_label_key(key: &str, errs: &mut Vec<String>) {
    let problems = is_qualified_name(key);
    if !problems.is_empty() {
        errs.push(format!("key: Invalid value: {key:?}: {}", problems.join("; ")));
    }
}

/// Mirrors `validateLabelValue` (the field path is `values[i][key]`, as upstream prints it).
fn validate_label_value(key: &str, index: usize, value: &str, errs: &mut Vec<String>) {
    let mut problems = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        problems.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        problems.push(LABEL_VALUE_ERR.to_string());
    }
    if !problems.is_empty() {
        errs.push(format!("values[{index}][{key}]: Invalid value: {value:?}: {}", problems.join("; ")));
    }
}

/// Mirrors `validation.IsQualifiedName`: `[prefix/]name`, the prefix a DNS-1123 subdomain of at
/// most 253 characters, the name at most 63 characters of `[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]`.
fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let mut parts = value.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => {
            errs.push(format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            if prefix.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
                errs.push(format!("prefix part {}", max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH)));
            }
            if !is_dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {DNS1123_SUBDOMAIN_ERR}"));
            }
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX_LENGTH)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_ERR}"));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, anchored: dot-separated
/// non-empty labels of lower-case alphanumerics and inner dashes.
fn is_dns1123_subdomain(s: &str) -> bool {
    let lower_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                lower_alnum(first) && lower_alnum(last) && bytes.iter().all(|b| lower_alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Go's `%#v` of a `[]string`, as `field.Invalid` prints the bad value.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(k, v)| Label { key: k.to_string(), value: v.to_string() }).collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: values.iter().map(std::string::ToString::to_string).collect(),
        }
    }

    fn selector(match_labels: &[(&str, &str)], match_expressions: Vec<SelectorRequirement>) -> LabelSelector {
        LabelSelector { match_labels: labels(match_labels), match_expressions }
    }

    fn error(selector: &LabelSelector) -> String {
        match Selector::from_label_selector(selector) {
            Err(ReconcileError::InvalidSelector(message)) => message,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(s) => panic!("selector unexpectedly valid: {s:?}"),
        }
    }

    fn matches(selector: &LabelSelector, pod_labels: &[(&str, &str)]) -> bool {
        Selector::from_label_selector(selector).unwrap().matches(&labels(pod_labels))
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        let empty = selector(&[], vec![]);
        assert!(matches(&empty, &[]));
        assert!(matches(&empty, &[("any", "thing")]));
    }

    #[test]
    fn match_labels_require_every_key_with_its_exact_value() {
        let s = selector(&[("foo", "bar"), ("tier", "web")], vec![]);
        assert!(matches(&s, &[("foo", "bar"), ("tier", "web"), ("extra", "x")]));
        assert!(!matches(&s, &[("foo", "bar")]));
        assert!(!matches(&s, &[("foo", "baz"), ("tier", "web")]));
        assert!(!matches(&s, &[]));
    }

    #[test]
    fn in_requires_the_key_with_one_of_the_values() {
        let s = selector(&[], vec![expr("env", "In", &["prod", "staging"])]);
        assert!(matches(&s, &[("env", "prod")]));
        assert!(matches(&s, &[("env", "staging")]));
        assert!(!matches(&s, &[("env", "dev")]));
        assert!(!matches(&s, &[]));
    }

    #[test]
    fn not_in_accepts_a_missing_key_or_another_value() {
        let s = selector(&[], vec![expr("env", "NotIn", &["prod"])]);
        assert!(matches(&s, &[]));
        assert!(matches(&s, &[("env", "dev")]));
        assert!(!matches(&s, &[("env", "prod")]));
    }

    #[test]
    fn exists_and_does_not_exist_look_only_at_the_key() {
        let exists = selector(&[], vec![expr("canary", "Exists", &[])]);
        let absent = selector(&[], vec![expr("canary", "DoesNotExist", &[])]);
        assert!(matches(&exists, &[("canary", "")]));
        assert!(!matches(&exists, &[("other", "x")]));
        assert!(!matches(&absent, &[("canary", "")]));
        assert!(matches(&absent, &[("other", "x")]));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = selector(&[("foo", "bar")], vec![expr("env", "In", &["prod"]), expr("canary", "DoesNotExist", &[])]);
        assert!(matches(&s, &[("foo", "bar"), ("env", "prod")]));
        assert!(!matches(&s, &[("foo", "bar"), ("env", "prod"), ("canary", "1")]));
        assert!(!matches(&s, &[("env", "prod")]));
    }

    #[test]
    fn an_unknown_operator_is_an_invalid_selector() {
        let s = selector(&[], vec![expr("foo", "Invalid", &[])]);
        assert_eq!(error(&s), r#""Invalid" is not a valid label selector operator"#);
        // Operators are case-sensitive, as upstream's switch.
        assert_eq!(
            error(&selector(&[], vec![expr("foo", "in", &["a"])])),
            r#""in" is not a valid label selector operator"#
        );
    }

    #[test]
    fn in_and_not_in_need_at_least_one_value() {
        let expected = "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty";
        assert_eq!(error(&selector(&[], vec![expr("foo", "In", &[])])), expected);
        assert_eq!(error(&selector(&[], vec![expr("foo", "NotIn", &[])])), expected);
    }

    #[test]
    fn exists_and_does_not_exist_must_have_no_values() {
        let expected =
            r#"values: Invalid value: []string{"a", "b"}: values set must be empty for exists and does not exist"#;
        assert_eq!(error(&selector(&[], vec![expr("foo", "Exists", &["a", "b"])])), expected);
        assert_eq!(error(&selector(&[], vec![expr("foo", "DoesNotExist", &["a", "b"])])), expected);
    }

    #[test]
    fn qualified_keys_with_a_dns_prefix_are_valid() {
        for key in ["a", "A.b-c_D9", "example.com/MyName", "app.kubernetes.io/name", "x/y", &"k".repeat(63)] {
            assert!(is_qualified_name(key).is_empty(), "{key}");
        }
        let prefix = format!("{}.{}", "a".repeat(126), "b".repeat(126)); // 253 characters.
        assert!(is_qualified_name(&format!("{prefix}/n")).is_empty());
    }

    #[test]
    fn malformed_keys_are_refused_with_upstream_wording() {
        assert_eq!(
            is_qualified_name(""),
            ["name part must be non-empty".to_string(), format!("name part {QUALIFIED_NAME_ERR}")]
        );
        assert_eq!(is_qualified_name("-a"), [format!("name part {QUALIFIED_NAME_ERR}")]);
        assert_eq!(is_qualified_name("a_"), [format!("name part {QUALIFIED_NAME_ERR}")]);
        assert_eq!(is_qualified_name("a b"), [format!("name part {QUALIFIED_NAME_ERR}")]);
        assert_eq!(is_qualified_name(&"k".repeat(64)), ["name part must be no more than 63 characters".to_string()]);
        assert_eq!(is_qualified_name("/a"), ["prefix part must be non-empty".to_string()]);
        assert_eq!(is_qualified_name("Example.com/a"), [format!("prefix part {DNS1123_SUBDOMAIN_ERR}")]);
        assert_eq!(is_qualified_name("a..b/a"), [format!("prefix part {DNS1123_SUBDOMAIN_ERR}")]);
        assert_eq!(
            is_qualified_name(&format!("{}/a", "a".repeat(254))),
            ["prefix part must be no more than 253 characters".to_string()]
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            [format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        );
    }

    #[test]
    fn an_invalid_key_is_an_invalid_selector() {
        let s = selector(&[("bad key", "v")], vec![]);
        assert_eq!(error(&s), format!(r#"key: Invalid value: "bad key": name part {QUALIFIED_NAME_ERR}"#));
    }

    #[test]
    fn label_values_may_be_empty_but_not_malformed_or_long() {
        assert!(matches(&selector(&[("foo", "")], vec![]), &[("foo", "")]));
        let s = selector(&[], vec![expr("foo", "In", &["ok", "not ok"])]);
        assert_eq!(error(&s), format!(r#"values[1][foo]: Invalid value: "not ok": {LABEL_VALUE_ERR}"#));
        let long = "v".repeat(64);
        let s = selector(&[("foo", &long)], vec![]);
        assert_eq!(error(&s), format!("values[0][foo]: Invalid value: {long:?}: must be no more than 63 characters"));
    }

    #[test]
    fn several_problems_in_one_requirement_are_aggregated_in_brackets() {
        let s = selector(&[], vec![expr("bad key", "In", &[])]);
        assert_eq!(
            error(&s),
            format!(
                r#"[key: Invalid value: "bad key": name part {QUALIFIED_NAME_ERR}, values: Invalid value: []string{{}}: for 'in', 'notin' operators, values set can't be empty]"#
            )
        );
    }

    #[test]
    fn the_first_invalid_requirement_decides_the_error() {
        let s = selector(&[("ok", "v")], vec![expr("a", "Bogus", &[]), expr("b", "In", &[])]);
        assert_eq!(error(&s), r#""Bogus" is not a valid label selector operator"#);
    }
}
