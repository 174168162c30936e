//! The progress bar of the commands that walk a table's rows (`reencrypt`, `migrate`,
//! `scan --target-url`): on stderr, hidden unless stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar showing rows done / total and rows/s, then `extra` (an indicatif template
/// fragment, e.g. `"  eta {eta}"`).
pub(crate) fn row_bar(extra: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    let template = format!(
        "{{elapsed_precise}} [{{wide_bar}}] {{human_pos}}/{{human_len}} rows  {{rate}}{extra}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        let style = style
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", s.per_sec());
            })
            .progress_chars("=> ");
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
