//! The report as one self-contained HTML page: inline CSS, an inline SVG chart, no
//! script, no external resource (its own Content-Security-Policy forbids loading any).
//! Everything that comes from data is escaped.

use std::fmt::Write;

use crate::report::{Control, Report, Status, INVENTORY_COLUMNS};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    crate::util::escape_with(text, |c| match c {
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    })
}

/// The page's only style sheet, inline (a server sends its hash as the CSP's
/// `style-src`, so nothing else on the page may style it).
pub const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px}h2{margin:32px 0 12px;font-size:20px;border-bottom:2px solid #d9dce1;padding-bottom:4px}
.meta{color:#555;margin:0 0 16px}
.summary{display:flex;gap:12px;flex-wrap:wrap;align-items:center}
.chip{padding:6px 12px;border-radius:14px;font-weight:600;background:#e8eaed}
td.pass,.chip.pass{color:#1e6b3a}td.warn,.chip.warn{color:#8a5a00}td.fail,.chip.fail{color:#a82315}td.not_applicable{color:#555}
.chip.pass{background:#dff3e6}.chip.warn{background:#fff1d0}.chip.fail{background:#fbe0dc}
.overall{font-size:20px;padding:8px 16px}
.control{background:#fff;border-radius:8px;padding:12px 16px;margin:10px 0;border-left:6px solid #bbb;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.control.pass{border-left-color:#2e8b57}.control.warn{border-left-color:#e69b00}.control.fail{border-left-color:#c0392b}
.control h3{margin:0 0 6px;font-size:15px;color:#1d1d1f}.badge{display:inline-block;min-width:44px;text-align:center;font-size:11px;padding:2px 6px;border-radius:4px;margin-right:8px;color:#fff;background:#777}
.badge.pass{background:#2e8b57}.badge.warn{background:#e69b00}.badge.fail{background:#c0392b}
.control ul{margin:4px 0;padding-left:20px}.control li{margin:2px 0}
.fix{margin:6px 0 0;color:#333}.fix b{color:#a82315}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #e1e4e8;padding:4px 8px;text-align:left}th{background:#eef0f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{background:#fff;border-radius:8px;padding:12px;overflow-x:auto}
pre{background:#fff;padding:12px;border-radius:8px;overflow-x:auto;font-size:12px}
"#;

fn badge(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::NotApplicable => "N/A",
    }
}

fn control(out: &mut String, c: &Control) {
    let st = c.status.as_str();
    let _ = write!(
        out,
        r#"<article class="control {st}" id="{anchor}"><h3><span class="badge {st}">{b}</span>{id} — {title}</h3><ul>"#,
        anchor = escape(&format!("c-{}", c.id)),
        b = badge(c.status),
        id = escape(&c.id),
        title = escape(&c.title),
    );
    for e in &c.evidence {
        let _ = write!(out, "<li>{}</li>", escape(e));
    }
    out.push_str("</ul>");
    if let Some(fix) = &c.remediation {
        let _ = write!(
            out,
            r#"<p class="fix"><b>Remediation:</b> {}</p>"#,
            escape(fix)
        );
    }
    out.push_str("</article>");
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024 + r.inventory.len() * 256);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">"#);
    out.push_str(r#"<meta name="viewport" content="width=device-width,initial-scale=1">"#);
    let _ = write!(
        out,
        "<title>KeyFlow compliance report — {}</title><style>{STYLE}</style></head><body><main>",
        escape(&r.evaluated_at)
    );
    let s = &r.summary;
    let _ = write!(
        out,
        r#"<h1>KeyFlow compliance report</h1><p class="meta">Generated {g} · evaluated at {e} · computed from live state</p><div class="summary"><span class="chip overall {o}">Overall: {ob}</span><span class="chip pass">{p} pass</span><span class="chip warn">{w} warn</span><span class="chip fail">{f} fail</span><span class="chip">{n} not applicable</span><span class="chip">{t} controls</span></div>"#,
        g = escape(&r.generated_at),
        e = escape(&r.evaluated_at),
        o = r.overall.as_str(),
        ob = badge(r.overall),
        p = s.pass,
        w = s.warn,
        f = s.fail,
        n = s.not_applicable,
        t = s.total,
    );
    out.push_str("<h2>Key ages against their cryptoperiods</h2><div class=\"chart\">");
    let (svg, left_out) = crate::chart::svg(r);
    if svg.is_empty() {
        out.push_str("<p>No active key version.</p>");
    } else {
        out.push_str(&svg);
        if left_out > 0 {
            let _ = write!(
                out,
                "<p>{left_out} more active keys, closer to the start of their cryptoperiod, are in the inventory below.</p>"
            );
        }
    }
    out.push_str("</div>");
    for (title, controls) in r.standards.titled() {
        let _ = write!(out, "<h2>{title}</h2>");
        for c in controls {
            control(&mut out, c);
        }
    }
    out.push_str("<h2>The old report's labels</h2><table><tr><th>Standard</th><th>Requirement</th><th>Status</th><th>Answered by</th></tr>");
    for l in &r.legacy_mapping {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{} — {}</td><td class="{st}">{}</td><td>{}</td></tr>"#,
            escape(l.standard),
            escape(l.requirement),
            escape(l.title),
            badge(l.status),
            escape(&l.controls.join(", ")),
            st = l.status.as_str(),
        );
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<h2>Cryptographic inventory ({} key versions)</h2><table><tr>",
        r.inventory.len()
    );
    for (header, _) in INVENTORY_COLUMNS {
        let _ = write!(out, "<th>{header}</th>");
    }
    out.push_str("</tr>");
    for k in &r.inventory {
        out.push_str("<tr>");
        for ((_, number), cell) in INVENTORY_COLUMNS.iter().zip(k.cells()) {
            let class = if *number { r#" class="num""# } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table><h2>Implementation</h2><pre>");
    let implementation =
        serde_json::to_string_pretty(&r.implementation).unwrap_or_else(|_| "{}".to_owned());
    out.push_str(&escape(&implementation));
    out.push_str("</pre></main></body></html>\n");
    out
}
