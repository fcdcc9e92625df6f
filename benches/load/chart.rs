//! The table as a chart: an SVG of grouped bars, one group per row, one bar per server,
//! each bar the server's ratio to the row's reference on a log scale around 1x.
//!
//! Hand-written SVG: a few rectangles and labels need no plotting crate.

use std::fmt::Write as _;

use crate::metric::Better;
use crate::report::Report;
use crate::servers::ServerKind;

const WIDTH: f64 = 860.0;
/// Where the server names end and the bars' area begins.
const BARS_LEFT: f64 = 150.0;
const BARS_WIDTH: f64 = 620.0;
/// The ratio axis spans 2^-AXIS_DOUBLINGS to 2^AXIS_DOUBLINGS; longer bars are clipped.
const AXIS_DOUBLINGS: f64 = 5.0;
const BAR_HEIGHT: f64 = 14.0;
const BAR_GAP: f64 = 4.0;
const GROUP_TITLE: f64 = 22.0;
const GROUP_GAP: f64 = 14.0;
const TOP: f64 = 64.0;

/// The report's ratios as an SVG document.
pub fn svg(report: &Report) -> String {
    let rows = report.chart_rows();
    let bars: usize = rows.iter().map(|row| row.ratios.len()).sum();
    let height = TOP
        + rows.len() as f64 * (GROUP_TITLE + GROUP_GAP)
        + bars as f64 * (BAR_HEIGHT + BAR_GAP)
        + 40.0;
    let center = BARS_LEFT + BARS_WIDTH / 2.0;
    let per_doubling = BARS_WIDTH / 2.0 / AXIS_DOUBLINGS;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">Estuary load benchmark: ratio to the row's reference (log scale)</text>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="38" fill="#555">{}</text>"##,
        escape(&report.machine().line())
    );

    // The axis: a line at 1x and ticks at every other doubling.
    let axis_bottom = height - 30.0;
    for doubling in -(AXIS_DOUBLINGS as i32)..=AXIS_DOUBLINGS as i32 {
        let x = center + f64::from(doubling) * per_doubling;
        let (stroke, width) = if doubling == 0 {
            ("#333", 1.5)
        } else {
            ("#ddd", 1.0)
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{axis_bottom:.1}" stroke="{stroke}" stroke-width="{width}"/>"##
        );
        if doubling % 2 != 0 {
            continue;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            axis_bottom + 14.0,
            tick_label(doubling)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            TOP - 8.0,
            tick_label(doubling)
        );
    }

    let mut y = TOP;
    for row in &rows {
        let direction = match row.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
            Better::Neither => "",
        };
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{:.1}" font-weight="bold">{} <tspan font-weight="normal" fill="#555">({direction}; ratio to {})</tspan></text>"##,
            y + 15.0,
            escape(&row.label),
            row.reference.name()
        );
        y += GROUP_TITLE;
        for &(server, ratio) in &row.ratios {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                BARS_LEFT - 8.0,
                y + BAR_HEIGHT - 3.0,
                server.name()
            );
            match ratio {
                Some(ratio) if ratio > 0.0 => {
                    let doublings = ratio.log2().clamp(-AXIS_DOUBLINGS, AXIS_DOUBLINGS);
                    let end = center + doublings * per_doubling;
                    let (x, width) = if end >= center {
                        (center, end - center)
                    } else {
                        (end, center - end)
                    };
                    let _ = writeln!(
                        svg,
                        r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{BAR_HEIGHT}" fill="{}"/>"##,
                        width.max(1.0),
                        color(server)
                    );
                    let (label_x, anchor) = if end >= center {
                        (end + 4.0, "start")
                    } else {
                        (end - 4.0, "end")
                    };
                    let _ = writeln!(
                        svg,
                        r##"<text x="{label_x:.1}" y="{:.1}" text-anchor="{anchor}">{ratio:.2}x</text>"##,
                        y + BAR_HEIGHT - 3.0
                    );
                }
                _ => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" fill="#999">no ratio</text>"##,
                        center + 4.0,
                        y + BAR_HEIGHT - 3.0
                    );
                }
            }
            y += BAR_HEIGHT + BAR_GAP;
        }
        y += GROUP_GAP;
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick_label(doubling: i32) -> String {
    if doubling >= 0 {
        format!("{}x", 1u32 << doubling)
    } else {
        format!("1/{}x", 1u32 << -doubling)
    }
}

fn color(server: ServerKind) -> &'static str {
    match server {
        ServerKind::Estuary => "#1f77b4",
        ServerKind::EstuaryBare => "#6baed6",
        ServerKind::Fastwebsockets => "#ff7f0e",
        ServerKind::Tungstenite => "#2ca02c",
        ServerKind::Axum => "#9467bd",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
