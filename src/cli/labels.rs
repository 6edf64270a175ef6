//! How the command line names the API's enum values in tables, CSV headings and charts.

/// "METRIC_UNACCOMPANIED_MINORS" → "unaccompanied minors".
pub fn name_of<E>(name: Result<&str, E>, prefix: &str) -> String {
    name.ok()
        .and_then(|n| n.strip_prefix(prefix))
        .unwrap_or("?")
        .to_lowercase()
        .replace('_', " ")
}
