//! How the command line names things: the API's enum values in tables, CSV headings and
//! charts, and counts of things.

/// "METRIC_UNACCOMPANIED_MINORS" → "unaccompanied minors".
pub fn name_of<E>(name: Result<&str, E>, prefix: &str) -> String {
    name.ok()
        .and_then(|n| n.strip_prefix(prefix))
        .unwrap_or("?")
        .to_lowercase()
        .replace('_', " ")
}

/// `n` and the noun: "1 report", "2 reports".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
