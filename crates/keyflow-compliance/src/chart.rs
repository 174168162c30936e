//! The inline SVG chart of the HTML report: each active key's age against its
//! cryptoperiod (and the start of its rotation window).

use std::fmt::Write;

use crate::html::escape;
use crate::report::Report;

/// At most this many bars; the rest are counted under the chart.
pub const MAX_BARS: usize = 40;

const WIDTH: f64 = 760.0;
const LABEL: f64 = 190.0;
const ROW: f64 = 24.0;
const TOP: f64 = 28.0;

/// The SVG (an empty string when no key is active) and how many keys were left out.
pub fn svg(report: &Report) -> (String, usize) {
    let mut rows: Vec<_> = report
        .inventory
        .iter()
        .filter(|k| k.status == "active")
        .collect();
    if rows.is_empty() {
        return (String::new(), 0);
    }
    let ratio =
        |k: &crate::InventoryItem| k.age_days as f64 / f64::from(k.cryptoperiod_days.max(1));
    rows.sort_by(|a, b| ratio(b).total_cmp(&ratio(a)).then(a.key_id.cmp(&b.key_id)));
    let left_out = rows.len().saturating_sub(MAX_BARS);
    rows.truncate(MAX_BARS);
    let max_days = rows
        .iter()
        .map(|k| k.age_days.max(i64::from(k.cryptoperiod_days)))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let plot = WIDTH - LABEL - 20.0;
    let x = |days: f64| LABEL + plot * (days / max_days);
    let height = TOP + ROW * rows.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Key ages against their cryptoperiods" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = write!(
        out,
        r##"<text x="{LABEL}" y="16" fill="#333">age (bar) · rotation window (amber line) · cryptoperiod end (red line), days</text>"##
    );
    for (i, k) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let period = f64::from(k.cryptoperiod_days);
        let age = k.age_days as f64;
        let warn = (period - f64::from(k.warn_days)).max(0.0);
        let color = if age > period {
            "#c0392b"
        } else if age >= warn {
            "#e69b00"
        } else {
            "#2e8b57"
        };
        let w = (x(age) - LABEL).max(1.0);
        let _ = write!(
            out,
            r##"<text x="{lx}" y="{ty}" text-anchor="end" fill="#222">{name}</text><rect x="{LABEL}" y="{ry}" width="{w:.1}" height="{h}" fill="{color}"><title>{name}: {age} of {period} days</title></rect><line x1="{px:.1}" x2="{px:.1}" y1="{y0}" y2="{y1}" stroke="#c0392b" stroke-width="2"/><line x1="{wx:.1}" x2="{wx:.1}" y1="{y0}" y2="{y1}" stroke="#e69b00" stroke-width="1" stroke-dasharray="3,2"/><text x="{vx:.1}" y="{ty}" fill="#444">{age} / {period} d</text>"##,
            lx = LABEL - 8.0,
            ty = y + 15.0,
            name = escape(&k.key_id),
            ry = y + 4.0,
            h = ROW - 8.0,
            px = x(period),
            wx = x(warn),
            y0 = y + 1.0,
            y1 = y + ROW - 1.0,
            vx = x(age.max(period)) + 6.0,
            age = k.age_days,
            period = k.cryptoperiod_days,
        );
    }
    let axis_y = TOP + ROW * rows.len() as f64 + 6.0;
    let _ = write!(
        out,
        r##"<line x1="{LABEL}" x2="{end}" y1="{axis_y}" y2="{axis_y}" stroke="#888"/>"##,
        end = LABEL + plot
    );
    let step = nice_step(max_days);
    let mut d = 0.0;
    while d <= max_days {
        let _ = write!(
            out,
            r##"<text x="{tx:.1}" y="{ty}" text-anchor="middle" fill="#666">{d}</text>"##,
            tx = x(d),
            ty = axis_y + 16.0,
        );
        d += step;
    }
    out.push_str("</svg>");
    (out, left_out)
}

/// A round tick step giving 4–10 ticks.
fn nice_step(max: f64) -> f64 {
    let mut step = 1.0;
    for s in [
        1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0, 1825.0,
    ] {
        step = s;
        if max / s <= 10.0 {
            break;
        }
    }
    step
}
