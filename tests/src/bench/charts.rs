//! The report's pictures, drawn with `plotters` into SVG files beside the report: live pods over
//! time, host against upstream, per create and scale-down scenario; and the host/upstream CPU and
//! peak-RSS ratios per scenario against their targets.
//!
//! plotters is built without its font features: text goes into the SVG as `<text>` for the
//! viewer to render, and layout uses plotters' own size estimate, so no system font is needed.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

/// Upstream's colour in every chart.
const UPSTREAM: RGBColor = RGBColor(0x99, 0x99, 0x99);
/// The host's colour in every chart.
const HOST: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// The second bar of a pair.
const SECOND: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// One line of a pods-over-time chart: a name and `(seconds, live pods)` at each change.
pub struct Series<'a> {
    /// The legend's name.
    pub name: &'a str,
    /// Whether this is the host's line (else upstream's).
    pub host: bool,
    /// Live pods after each change, in time order.
    pub points: &'a [(f64, usize)],
}

/// One group of bars: a scenario's label and its host/upstream CPU and peak-RSS ratios.
pub struct RatioBars {
    /// The scenario, short.
    pub label: String,
    /// Controller CPU, host/upstream.
    pub cpu: Option<f64>,
    /// Peak RSS, host/upstream.
    pub rss: Option<f64>,
}

fn drawing<E: std::error::Error + Send + Sync + 'static>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::Error::new(e).context("drawing a chart")
}

/// Draws live pods over time as step lines, one per series, to `path`.
pub fn pods_over_time(path: &Path, caption: &str, series: &[Series<'_>]) -> Result<()> {
    let root = SVGBackend::new(path, (760, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let x_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max).max(0.01);
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.04, 0.0..y_max as f64 * 1.08)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the bench's first write")
        .y_desc("live pods")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(drawing)?;
    for s in series {
        let color = if s.host { HOST } else { UPSTREAM };
        let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: if s.host { 2 } else { 3 } };
        chart
            .draw_series(LineSeries::new(steps(s.points), style))
            .map_err(drawing)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(drawing)
}

/// The legend box, in the same style on every chart.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(drawing)
}

/// Each change as a step: the count holds until the next change.
fn steps(points: &[(f64, usize)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(t, n)) in points.iter().enumerate() {
        if i > 0 {
            out.push((t, points[i - 1].1 as f64));
        }
        out.push((t, n as f64));
    }
    out
}

/// Draws, per scenario, a bar for the CPU ratio and one for the peak-RSS ratio, with dashed
/// lines at the targets (`cpu_target`, `rss_target`) and at parity, to `path`.
pub fn ratio_bars(path: &Path, caption: &str, rows: &[RatioBars], cpu_target: f64, rss_target: f64) -> Result<()> {
    let height = 120 + 34 * rows.len() as u32;
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let x_max = rows.iter().flat_map(|r| [r.cpu, r.rss]).flatten().fold(1.0, f64::max) * 1.1;
    let n = rows.len() as f64;
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d(0.0..x_max, 0.0..n)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("host / upstream (lower is better)")
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at the middle of each band (n - i - 0.5); other ticks stay blank.
            let band = n - y - 0.5;
            let i = band.round();
            if (band - i).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(drawing)?;
    for (i, row) in rows.iter().enumerate() {
        let top = n - i as f64;
        for (value, offset, color) in [(row.cpu, 0.15, HOST), (row.rss, 0.5, SECOND)] {
            if let Some(v) = value {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, top - offset - 0.33), (v, top - offset)],
                        color.filled(),
                    )))
                    .map_err(drawing)?;
            }
        }
    }
    for (x, color, name) in
        [(cpu_target, HOST, "CPU target"), (rss_target, SECOND, "RSS target"), (1.0, BLACK, "parity")]
    {
        let style = color.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new([(x, 0.0), (x, n)], 6, 4, style))
            .map_err(drawing)?
            .label(format!("{name} {x}"))
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 24, ly)], style));
    }
    chart
        .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (0.0, 0.0)], HOST.filled())))
        .map_err(drawing)?
        .label("CPU")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], HOST.filled()));
    chart
        .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (0.0, 0.0)], SECOND.filled())))
        .map_err(drawing)?
        .label("peak RSS")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], SECOND.filled()));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(drawing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_holds_until_the_next_one() {
        let points = [(0.0, 0), (1.0, 5), (2.5, 10)];
        assert_eq!(steps(&points), vec![(0.0, 0.0), (1.0, 0.0), (1.0, 5.0), (2.5, 5.0), (2.5, 10.0)]);
    }

    #[test]
    fn both_charts_render_to_svg_with_their_text() {
        let dir = std::env::temp_dir().join(format!("bench-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = pods_over_time(
            &dir.join("pods.svg"),
            "1×10 from 0",
            &[
                Series { name: "upstream", host: false, points: &[(0.0, 0), (0.5, 4), (1.0, 10)] },
                Series { name: "host", host: true, points: &[(0.0, 0), (0.4, 6), (0.8, 10)] },
            ],
        );
        let bars = ratio_bars(
            &dir.join("ratios.svg"),
            "ratios",
            &[RatioBars { label: "1×10".into(), cpu: Some(0.6), rss: Some(0.3) }],
            0.5,
            0.4,
        );
        let text = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let (pods, ratios) = (lines.map(|()| text("pods.svg")), bars.map(|()| text("ratios.svg")));
        std::fs::remove_dir_all(&dir).unwrap();
        let (pods, ratios) = (pods.unwrap(), ratios.unwrap());
        assert!(pods.starts_with("<svg") && pods.contains("live pods") && pods.contains("host"));
        assert!(ratios.contains("1×10") && ratios.contains("CPU target 0.5"));
    }
}
