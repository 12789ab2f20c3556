//! Just enough of the Prometheus text format to sum counters and histogram parts by name and labels.

/// One sample: its metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, e.g. `apiserver_request_total` or `..._sum`.
    pub name: String,
    /// The labels in the order they appear.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or `""` when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

/// Every sample named exactly `name` in `text` (comments and other metrics are skipped).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|s| s.name == name)
        .collect()
}

/// The sum of every sample named `name` whose labels satisfy `keep`.
pub fn sum_where(text: &str, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
    samples(text, name).iter().filter(|s| keep(s)).map(|s| s.value).sum()
}

/// The sum of every sample named `name`.
pub fn sum(text: &str, name: &str) -> f64 {
    sum_where(text, name, |_| true)
}

/// Parses `name{k="v",...} value [timestamp]` or `name value`.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(i, '}')) => {
                    end = Some(i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                if escaped {
                    value.push(match c {
                        'n' => '\n',
                        other => other,
                    });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    break;
                } else {
                    value.push(c);
                }
            }
            labels.push((key.trim().to_string(), value));
        }
        &body[end? + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_string(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_and_plain_samples_are_parsed_and_summed() {
        let text = "# HELP x y\n\
            apiserver_request_total{code=\"201\",resource=\"pods\",verb=\"POST\"} 12\n\
            apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"WATCH\"} 3\n\
            apiserver_request_total_other 9\n\
            up 1\n\
            odd{a=\"x,\\\"y}\"} 2.5 1700000000\n";
        assert_eq!(sum(text, "apiserver_request_total"), 15.0);
        assert_eq!(sum_where(text, "apiserver_request_total", |s| s.label("verb") != "WATCH"), 12.0);
        assert_eq!(sum(text, "up"), 1.0);
        let odd = samples(text, "odd");
        assert_eq!(odd[0].label("a"), "x,\"y}");
        assert_eq!(odd[0].value, 2.5);
    }
}
