//! `--report report.html`: one self-contained page (inline SVG, no scripts, nothing fetched):
//! the summary table, latency over time (p50, p99 and max of each second), and the latency
//! of each request kind by percentile.

use std::fmt::Write as _;

use crate::stats::{Recorder, Summary};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `series` (name, points), x and y from 0 to their maxima.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(1e-9, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1e-9, f64::max)
        * 1.1;
    let (left, bottom) = (60.0, 30.0);
    let (w, h) = (WIDTH - left - 10.0, HEIGHT - bottom - 10.0);
    let mut svg = format!(
        "<h2>{}</h2><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">",
        escape(title)
    );
    let _ = write!(
        svg,
        "<rect x=\"{left}\" y=\"10\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for tick in 0..=4 {
        let y = 10.0 + h - h * tick as f64 / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1}</text><line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/>",
            left - 4.0,
            y + 4.0,
            y_max * tick as f64 / 4.0,
            left + w
        );
        let x = left + w * tick as f64 / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{:.1}</text>",
            HEIGHT - 14.0,
            x_max * tick as f64 / 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>",
        left + w / 2.0,
        HEIGHT - 1.0,
        escape(x_label),
        10.0 + h / 2.0,
        10.0 + h / 2.0,
        escape(y_label)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    left + w * x / x_max,
                    10.0 + h - h * y / y_max
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            path.join(" "),
            left + 8.0,
            24.0 + 13.0 * i as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole page.
pub fn html(title: &str, summaries: &[Summary], recorder: &Recorder, notes: &[String]) -> String {
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body><h1>{0}</h1>",
        escape(title)
    );
    page.push_str("<table><tr><th>request</th><th>count</th><th>per second</th><th>success</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th></tr>");
    for s in summaries {
        let errors: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c} × {n}")).collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}%</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(&s.kind), s.count, s.per_second, s.success, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms,
            escape(&errors.join(", "))
        );
    }
    page.push_str("</table><ul>");
    for note in notes {
        let _ = write!(page, "<li>{}</li>", escape(note));
    }
    page.push_str("</ul>");
    let over_time: Vec<(String, Vec<(f64, f64)>)> = [("p50", 0.5), ("p99", 0.99), ("max", 1.0)]
        .iter()
        .map(|&(name, q)| {
            let points = recorder
                .per_second
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.is_empty())
                .map(|(second, h)| (second as f64, h.value_at_quantile(q) as f64 / 1000.0))
                .collect();
            (name.to_string(), points)
        })
        .collect();
    page.push_str(&chart(
        "Latency over time (all requests)",
        "second of the run",
        "ms",
        &over_time,
    ));
    // By percentile: x is the number of nines (0 = p0, 1 = p90, 2 = p99, 3 = p99.9).
    let by_percentile: Vec<(String, Vec<(f64, f64)>)> = recorder
        .kinds
        .iter()
        .map(|(kind, series)| {
            let points = (0..=40)
                .map(|i| {
                    let nines = i as f64 / 10.0;
                    let q = 1.0 - 10f64.powf(-nines);
                    (nines, series.latency.value_at_quantile(q) as f64 / 1000.0)
                })
                .collect();
            (kind.to_string(), points)
        })
        .collect();
    page.push_str(&chart(
        "Latency by percentile (x: nines, 1 = p90, 2 = p99, 3 = p99.9)",
        "nines",
        "ms",
        &by_percentile,
    ));
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_report_is_one_page_with_both_charts_and_escaped_text() {
        let mut recorder = Recorder::default();
        for i in 0..50u64 {
            recorder.record(
                "transfer",
                Duration::from_millis(i * 100),
                Duration::from_millis(i % 7 + 1),
                None,
            );
        }
        let summaries = recorder.summaries(Duration::from_secs(5));
        let page = html(
            "run <1>",
            &summaries,
            &recorder,
            &["audit: passed & fine".into()],
        );
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("run &lt;1&gt;") && page.contains("passed &amp; fine"));
        assert!(
            !page.contains("<script") && !page.contains("http://")
                || page.contains("xmlns=\"http://www.w3.org/2000/svg\"")
        );
    }
}
