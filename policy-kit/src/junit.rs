//! JUnit XML for the `conformance` command: one `<testsuite>` per suite, one `<testcase>` per
//! case, a `<failure>` typed with the failure's label. The de-facto schema that Jenkins, GitLab
//! and GitHub test reporters read; fuel goes in each case's `<system-out>`.

use std::{fmt::Write as _, time::Duration};

use crate::suite::CaseReport;

/// The whole document for `reports`, in their order, grouped by consecutive suite names.
pub fn render(name: &str, reports: &[CaseReport], elapsed: Duration) -> String {
    let failures = reports.iter().filter(|r| r.failure.is_some()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{}\">",
        escape(name),
        reports.len(),
        seconds(elapsed)
    );
    for suite in reports.chunk_by(|a, b| a.suite == b.suite) {
        render_suite(&mut xml, suite);
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn render_suite(xml: &mut String, cases: &[CaseReport]) {
    let failures = cases.iter().filter(|r| r.failure.is_some()).count();
    let time: Duration = cases.iter().map(|r| r.duration).sum();
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{}\">",
        escape(&cases[0].suite),
        cases.len(),
        seconds(time)
    );
    for case in cases {
        let _ = writeln!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\">",
            escape(&case.suite),
            escape(&case.name),
            seconds(case.duration)
        );
        if let Some((label, message)) = &case.failure {
            let _ = writeln!(
                xml,
                "      <failure type=\"{label}\" message=\"{}\">{}</failure>",
                escape(message),
                escape(message)
            );
        }
        let _ = writeln!(xml, "      <system-out>fuel: {}</system-out>", case.fuel);
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n");
}

fn seconds(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// Escapes text for an attribute or element; drops characters XML 1.0 cannot carry at all.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(suite: &str, name: &str, failure: Option<(&'static str, &str)>) -> CaseReport {
        CaseReport {
            suite: suite.into(),
            name: name.into(),
            failure: failure.map(|(l, m)| (l, m.to_string())),
            fuel: 42,
            duration: Duration::from_millis(2),
        }
    }

    #[test]
    fn suites_group_cases_and_failures_carry_their_type() {
        let reports = [
            case("conformance", "steady-state", None),
            case("conformance", "large", Some(("out_of_fuel", "ran out of fuel (budget 20 units)"))),
            case("fixtures", "a", None),
        ];
        let xml = render("run", &reports, Duration::from_millis(6));
        assert!(xml.contains("<testsuites name=\"run\" tests=\"3\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testsuite name=\"conformance\" tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testsuite name=\"fixtures\" tests=\"1\" failures=\"0\""), "{xml}");
        assert!(xml.contains("<failure type=\"out_of_fuel\" message=\"ran out of fuel (budget 20 units)\">"), "{xml}");
        assert!(xml.contains("<testcase classname=\"conformance\" name=\"large\" time=\"0.002000\">"), "{xml}");
        assert_eq!(xml.matches("<system-out>fuel: 42</system-out>").count(), 3);
    }

    #[test]
    fn markup_in_messages_is_escaped() {
        assert_eq!(escape("a<b & \"c\"\n'd'\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;&apos;d&apos;");
    }
}
