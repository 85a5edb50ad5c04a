//! The model chart as a self-contained SVG: panels side by side sharing a logarithmic x axis
//! (connections), one coloured line per series with a marker at each measured point, and one
//! legend. No dependency: it is a few hundred bytes of markup per line.

use std::fmt::Write;

/// One line on a panel: `(x, y)` points; a `None` y (nothing measured, e.g. every request
/// failed) breaks the line there.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, Option<f64>)>,
}

/// One plot.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    /// Unit of the y axis, shown beside it.
    pub y_label: String,
    /// Logarithmic y (latencies spanning microseconds to seconds); else linear from zero.
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Colours distinct enough to tell six lines apart (Okabe–Ito, colour-blind safe).
const COLOURS: [&str; 8] = [
    "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#000000", "#F0E442",
];
/// Dash patterns, so lines stay apart in greyscale too.
const DASHES: [&str; 4] = ["", "6 3", "2 3", "8 3 2 3"];

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 50.0;
const MARGIN_B: f64 = 50.0;
const LEGEND_H: f64 = 70.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A readable tick label: 1, 10, 100, 1k, 10k, 1.5M.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if x.fract().abs() < 1e-9 || x.abs() >= 10.0 {
        format!("{x:.0}{suffix}")
    } else {
        format!("{x:.1}{suffix}")
    }
}

/// "Nice" linear ticks from 0 to at least `max`: the finest 1/2/2.5/5 step that needs at most
/// six intervals.
fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let mag = 10f64.powf((max / 6.0).log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| (max / s).ceil() <= 6.0)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Decades covering `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let a = lo.max(1e-12).log10().floor() as i32;
    let b = hi.max(lo).max(1e-12).log10().ceil() as i32;
    (a..=b.max(a + 1)).map(|e| 10f64.powi(e)).collect()
}

/// Draw `panels` side by side under `title`, x axis labelled `x_label` (logarithmic).
pub fn chart(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let width = MARGIN_L + panels.len() as f64 * (PANEL_W + MARGIN_L + MARGIN_R);
    let height = MARGIN_T + PANEL_H + MARGIN_B + LEGEND_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="22" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title)
    );

    let xs: Vec<f64> = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|sr| sr.points.iter().map(|(x, _)| *x))
        .filter(|x| *x > 0.0)
        .collect();
    let (xlo, xhi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (xlo, xhi) = if xs.is_empty() {
        (1.0, 10.0)
    } else {
        (xlo, xhi)
    };
    let x_ticks = log_ticks(xlo, xhi);
    let (lx0, lx1) = (
        x_ticks[0].log10(),
        x_ticks[x_ticks.len() - 1]
            .log10()
            .max(x_ticks[0].log10() + 1.0),
    );

    for (pi, panel) in panels.iter().enumerate() {
        let ox = MARGIN_L + pi as f64 * (PANEL_W + MARGIN_L + MARGIN_R);
        let oy = MARGIN_T;
        let ys: Vec<f64> = panel
            .series
            .iter()
            .flat_map(|sr| sr.points.iter().filter_map(|(_, y)| *y))
            .filter(|y| y.is_finite() && (!panel.log_y || *y > 0.0))
            .collect();
        let ymax = ys.iter().cloned().fold(0.0, f64::max);
        let ymin = ys.iter().cloned().fold(f64::MAX, f64::min);
        let (y_ticks, ymap): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if panel.log_y {
            let t = log_ticks(if ys.is_empty() { 1.0 } else { ymin }, ymax.max(1.0));
            let (a, b) = (t[0].log10(), t[t.len() - 1].log10());
            (
                t,
                Box::new(move |y: f64| oy + PANEL_H - (y.log10() - a) / (b - a) * PANEL_H),
            )
        } else {
            let t = linear_ticks(ymax);
            let top = t[t.len() - 1];
            (t, Box::new(move |y: f64| oy + PANEL_H - y / top * PANEL_H))
        };
        let xmap = |x: f64| ox + (x.log10() - lx0) / (lx1 - lx0) * PANEL_W;

        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{}</text>"#,
            ox + PANEL_W / 2.0,
            oy - 10.0,
            esc(&panel.title)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{ox:.1}\" y=\"{oy:.1}\" width=\"{PANEL_W}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#888\"/>"
        );
        for &t in &y_ticks {
            let y = ymap(t);
            let _ = writeln!(
                s,
                "<line x1=\"{ox:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                ox + PANEL_W,
                ox - 6.0,
                y + 4.0,
                si(t)
            );
        }
        for &t in &x_ticks {
            let x = xmap(t);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{oy:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                oy + PANEL_H,
                oy + PANEL_H + 16.0,
                si(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            ox + PANEL_W / 2.0,
            oy + PANEL_H + 34.0,
            esc(x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            ox - 50.0,
            oy + PANEL_H / 2.0,
            esc(&panel.y_label)
        );
        for (si_, sr) in panel.series.iter().enumerate() {
            let colour = COLOURS[si_ % COLOURS.len()];
            let dash = DASHES[(si_ / 2) % DASHES.len()];
            let mut segment: Vec<(f64, f64)> = Vec::new();
            let mut segments = Vec::new();
            for &(x, y) in &sr.points {
                match y.filter(|y| y.is_finite() && (!panel.log_y || *y > 0.0)) {
                    Some(y) if x > 0.0 => segment.push((xmap(x), ymap(y))),
                    _ => segments.push(std::mem::take(&mut segment)),
                }
            }
            segments.push(segment);
            for seg in segments.iter().filter(|s| !s.is_empty()) {
                let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                    pts.join(" ")
                );
                for (x, y) in seg {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"><title>{}</title></circle>"#,
                        esc(&sr.name)
                    );
                }
            }
        }
    }

    // One legend for all panels: the series are the same in each.
    if let Some(first) = panels.first() {
        let per_row = 4;
        for (i, sr) in first.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let dash = DASHES[(i / 2) % DASHES.len()];
            let x = MARGIN_L + (i % per_row) as f64 * 220.0;
            let y = MARGIN_T + PANEL_H + MARGIN_B + 10.0 + (i / per_row) as f64 * 22.0;
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3" stroke-dasharray="{dash}"/><circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 36.0,
                x + 18.0,
                x + 44.0,
                y + 4.0,
                esc(&sr.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(si(1.0), "1");
        assert_eq!(si(10_000.0), "10k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(linear_ticks(83.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(linear_ticks(150_000.0).last(), Some(&150_000.0));
        assert_eq!(
            log_ticks(3.0, 2000.0),
            vec![1.0, 10.0, 100.0, 1000.0, 10000.0]
        );
    }

    #[test]
    fn a_chart_has_a_line_and_a_legend_entry_per_series_and_skips_missing_points() {
        let series = vec![
            Series {
                name: "event/epoll".into(),
                points: vec![(1.0, Some(10.0)), (10.0, Some(100.0)), (100.0, None)],
            },
            Series {
                name: "iterative <1>".into(),
                points: vec![(1.0, Some(5.0)), (10.0, Some(4.0))],
            },
        ];
        let svg = chart(
            "t",
            "connections",
            &[Panel {
                title: "throughput".into(),
                y_label: "req/s".into(),
                log_y: false,
                series,
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("iterative &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 4 + 2);
    }
}
