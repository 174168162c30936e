//! The report as Markdown (for tickets and audit folders). Text from data is escaped so
//! it cannot open HTML or break a table.

use std::fmt::Write;

use crate::report::{Report, Status, INVENTORY_COLUMNS};

/// Escapes text for a Markdown paragraph or table cell: HTML-significant characters
/// become entities, pipes and newlines cannot break a table row.
pub fn escape(text: &str) -> String {
    crate::util::escape_with(text, |c| match c {
        '|' => Some("\\|"),
        '\n' | '\r' => Some(" "),
        _ => None,
    })
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅ pass",
        Status::Warn => "⚠️ warn",
        Status::Fail => "❌ fail",
        Status::NotApplicable => "➖ not applicable",
    }
}

/// The whole report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(out, "# KeyFlow compliance report\n");
    let _ = writeln!(
        out,
        "Generated {} · evaluated at {} · computed from live state\n",
        escape(&r.generated_at),
        escape(&r.evaluated_at)
    );
    let _ = writeln!(
        out,
        "**Overall: {}** — {} controls: {} pass, {} warn, {} fail, {} not applicable\n",
        label(r.overall),
        s.total,
        s.pass,
        s.warn,
        s.fail,
        s.not_applicable
    );
    for (title, controls) in r.standards.titled() {
        let _ = writeln!(out, "## {title}\n");
        for c in controls {
            let _ = writeln!(
                out,
                "### {} — {} ({})\n",
                escape(&c.id),
                escape(&c.title),
                label(c.status)
            );
            for e in &c.evidence {
                let _ = writeln!(out, "- {}", escape(e));
            }
            if let Some(fix) = &c.remediation {
                let _ = writeln!(out, "\n**Remediation:** {}", escape(fix));
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "## The old report's labels\n");
    let _ = writeln!(out, "| Standard | Requirement | Status | Answered by |");
    let _ = writeln!(out, "|---|---|---|---|");
    for l in &r.legacy_mapping {
        let _ = writeln!(
            out,
            "| {} | {} — {} | {} | {} |",
            escape(l.standard),
            escape(l.requirement),
            escape(l.title),
            label(l.status),
            escape(&l.controls.join(", "))
        );
    }
    let _ = writeln!(
        out,
        "\n## Cryptographic inventory ({} key versions)\n",
        r.inventory.len()
    );
    let headers: Vec<&str> = INVENTORY_COLUMNS.iter().map(|(h, _)| *h).collect();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    for (_, number) in INVENTORY_COLUMNS {
        out.push_str(if number { "|--:" } else { "|---" });
    }
    out.push_str("|\n");
    for k in &r.inventory {
        let cells: Vec<String> = k.cells().iter().map(|c| escape(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}
