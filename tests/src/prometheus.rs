//! Reading samples out of Prometheus text exposition (what `/metrics` serves).

/// The value of the sample `name{labels}` in Prometheus text, where every `(key, value)` of
/// `labels` must match (other labels may be present).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_samples(text, name).into_iter().find_map(|(sample_labels, value)| {
        labels.iter().all(|(k, v)| sample_labels.iter().any(|(sk, sv)| sk == k && sv == v)).then_some(value)
    })
}

/// The sum of every sample of metric `name` whose labels satisfy `keep`.
pub fn metric_sum(text: &str, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> f64 {
    metric_samples(text, name).iter().filter(|(labels, _)| keep(labels)).map(|(_, value)| value).sum()
}

/// Every sample of metric `name`: its labels and value.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((labels, value)) = rest.rsplit_once('}') else { continue };
            (parse_labels(labels), value)
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            continue;
        };
        if let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            samples.push((labels, value));
        }
    }
    samples
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# HELP workqueue_adds Total\n# TYPE workqueue_adds counter\nworkqueue_adds_total{name=\"replicaset\"} 7\n\
                    workqueue_depth{name=\"replicaset\"} 0\nx_count 3\nx_count_other 4\n\
                    info{digest=\"a,b\",source=\"embedded \\\"default\\\"\"} 1\n";
        assert_eq!(metric(text, "workqueue_adds_total", &[("name", "replicaset")]), Some(7.0));
        assert_eq!(metric(text, "workqueue_adds_total", &[("name", "other")]), None);
        assert_eq!(metric(text, "workqueue_depth", &[]), Some(0.0));
        assert_eq!(metric(text, "x_count", &[]), Some(3.0));
        assert_eq!(metric(text, "info", &[("digest", "a,b"), ("source", "embedded \"default\"")]), Some(1.0));
    }

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP x y\n\
            apiserver_request_total{code=\"201\",resource=\"pods\",verb=\"POST\"} 12\n\
            apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"WATCH\"} 3\n\
            apiserver_request_total_other 9\n\
            up 1\n\
            odd{a=\"x,\\\"y}\"} 2.5 1700000000\n";
        let not_watch = |labels: &[(String, String)]| !labels.iter().any(|(k, v)| k == "verb" && v == "WATCH");
        assert_eq!(metric_sum(text, "apiserver_request_total", |_| true), 15.0);
        assert_eq!(metric_sum(text, "apiserver_request_total", not_watch), 12.0);
        assert_eq!(metric_sum(text, "up", |_| true), 1.0);
        assert_eq!(metric(text, "odd", &[("a", "x,\"y}")]), Some(2.5));
    }
}
