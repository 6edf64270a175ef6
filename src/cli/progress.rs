//! Progress on long work (`import`, `sync --into`, `admin backup`, `restore`, scans of the
//! transparency log by `audit --verify` and `audit verify-reciprocity`): a bar with
//! count or bytes, rate and time left, drawn on stderr only while both stdout and stderr
//! are a terminal, so that piped or redirected output stays clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` things called `what` ("reports").
pub fn items(total: u64, what: &str) -> ProgressBar {
    styled(
        ProgressBar::new(total),
        &format!("{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}"),
    )
}

/// A counter of things called `what` ("changes") whose total is not known.
pub fn counter(what: &str) -> ProgressBar {
    styled(
        ProgressBar::new_spinner(),
        &format!("{{spinner}} {{pos}} {what}  {{per_sec}}  {{elapsed}}"),
    )
}

/// A bar over `total` bytes of `what` ("backup").
pub fn bytes(total: u64, what: &str) -> ProgressBar {
    styled(
        ProgressBar::new(total),
        &format!("{{bar:40}} {{bytes}}/{{total_bytes}} {what}  {{bytes_per_sec}}  eta {{eta}}"),
    )
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
