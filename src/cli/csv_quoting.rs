//! RFC 4180 quoting, checked on the bytes of a CSV file as they are read: the csv crate
//! reads malformed quoting leniently — `"Boat" seen` as `Boat seen`, a stray `"` as the
//! start of a cell that runs to the end of the file — and a report read that way would
//! be signed with text its author never wrote, or the rest of the file lost unreported.
//!
//! Three faults are found, each told by the line its record starts on (lines end with
//! "\n", "\r\n" or a lone "\r", as `import` counts them):
//! - a `"` inside a cell that does not start with one (RFC 4180 §2 rule 5);
//! - text after the closing `"` of a quoted cell (rule 7: a cell is quoted whole);
//! - a quoted cell still open at the end of the file.

use std::collections::HashMap;

/// Where the reader is within a record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first byte of a record (blank lines are skipped here).
    RecordStart,
    /// At the start of a cell.
    CellStart,
    /// In a cell that does not start with `"`.
    Unquoted,
    /// In a quoted cell.
    Quoted,
    /// Just after a `"` in a quoted cell: it closes the cell, or a second `"` follows.
    QuoteInQuoted,
}

/// The checker: fed every byte of the file in order, it keeps the first fault of each
/// record by the record's first line.
pub struct Quoting {
    state: State,
    /// The line the next byte is on.
    line: usize,
    after_cr: bool,
    last: Option<u8>,
    /// The line the current record started on, and the one its open quoted cell did.
    record_line: usize,
    quote_line: usize,
    faults: HashMap<usize, String>,
}

impl Default for Quoting {
    fn default() -> Self {
        Self {
            state: State::RecordStart,
            line: 1,
            after_cr: false,
            last: None,
            record_line: 1,
            quote_line: 1,
            faults: HashMap::new(),
        }
    }
}

impl Quoting {
    /// Reads the next bytes of the file.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            // "\r\n" ends one line, at its "\r".
            if self.after_cr && byte != b'\n' {
                self.line += 1;
            }
            let end_of_line = byte == b'\n' || byte == b'\r';
            self.step(byte, end_of_line);
            if byte == b'\n' {
                self.line += 1;
            }
            self.after_cr = byte == b'\r';
            self.last = Some(byte);
        }
    }

    fn step(&mut self, byte: u8, end_of_line: bool) {
        self.state = match (self.state, byte) {
            (State::RecordStart, _) if end_of_line => State::RecordStart,
            (State::RecordStart, _) => {
                self.record_line = self.line;
                self.cell_start(byte, end_of_line)
            }
            (State::CellStart, _) => self.cell_start(byte, end_of_line),
            (State::Unquoted | State::QuoteInQuoted, b',') => State::CellStart,
            (State::Unquoted | State::QuoteInQuoted, _) if end_of_line => State::RecordStart,
            (State::Unquoted, b'"') => {
                self.fault(
                    "a `\"` inside a cell that does not start with one: a cell holding `\"` is \
                     quoted whole, with each `\"` in it doubled (RFC 4180), as export writes it",
                );
                State::Unquoted
            }
            (State::Unquoted, _) => State::Unquoted,
            (State::Quoted, b'"') => State::QuoteInQuoted,
            // A second `"` is one `"` of the cell's text.
            (State::Quoted, _) | (State::QuoteInQuoted, b'"') => State::Quoted,
            (State::QuoteInQuoted, _) => {
                self.fault(
                    "text after the closing `\"` of a quoted cell: a cell is quoted whole \
                     (RFC 4180), with each `\"` in it doubled, as export writes it",
                );
                State::Unquoted
            }
        };
    }

    fn cell_start(&mut self, byte: u8, end_of_line: bool) -> State {
        match byte {
            b'"' => {
                self.quote_line = self.line;
                State::Quoted
            }
            b',' => State::CellStart,
            _ if end_of_line => State::RecordStart,
            _ => State::Unquoted,
        }
    }

    fn fault(&mut self, why: &str) {
        self.faults
            .entry(self.record_line)
            .or_insert_with(|| why.to_owned());
    }

    /// The end of the file: a quoted cell still open is its record's fault.
    pub fn finish(&mut self) {
        if self.state == State::Quoted {
            // `line` is already the next one after a final "\n" (not after a "\r").
            let last = if self.last == Some(b'\n') {
                self.line - 1
            } else {
                self.line
            };
            let why = format!(
                "the quoted cell opened on line {} is never closed: lines {} to {last} \
                 (the end of the file) were read as this one record, and none of them was \
                 imported; a `\"` is missing or stray there",
                self.quote_line, self.record_line
            );
            self.faults.entry(self.record_line).or_insert(why);
        }
        self.state = State::RecordStart;
    }

    /// The fault of the record starting on `line`, if it has one (once).
    pub fn take(&mut self, line: usize) -> Option<String> {
        self.faults.remove(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(text: &str) -> Vec<(usize, String)> {
        let mut q = Quoting::default();
        // Fed in pieces, as a reader gives them.
        for chunk in text.as_bytes().chunks(3) {
            q.feed(chunk);
        }
        q.finish();
        let mut found: Vec<_> = q.faults.into_iter().collect();
        found.sort();
        found
    }

    #[test]
    fn well_formed_quoting_has_no_fault() {
        for text in [
            "a,b\n1,2\n",
            "a,b\r\n\"x, \"\"y\"\"\",2\r\n",
            "a,b\n\"line one\nline two\",2\n\n3,4",
            "a,b\r\"x\r\ny\",\"\"\r",
            "",
        ] {
            assert!(faults(text).is_empty(), "{text:?}: {:?}", faults(text));
        }
    }

    #[test]
    fn each_fault_is_told_by_the_line_its_record_starts_on() {
        let text = "a,b\n1,2\n\"Boat\" seen,2\nab\"c,3\n\"multi\nline\" x,4\n5,6\n";
        let found: Vec<usize> = faults(text).into_iter().map(|(line, _)| line).collect();
        assert_eq!(found, [3, 4, 5]);
        for end in ["\r\n", "\n", "\r", ""] {
            let open = faults(&format!("a,b\r\n1,2\r\n\"Synthetic,2\r\n3,4\r\n5,6{end}"));
            assert_eq!(open.len(), 1);
            assert_eq!(open[0].0, 3);
            assert!(open[0].1.contains("lines 3 to 5"), "{end:?}: {}", open[0].1);
        }
    }
}
