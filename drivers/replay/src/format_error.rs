//! The one error type of the file readers: every malformed input names the file, the field, the
//! byte offset where the problem is, and what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

/// A malformed or unreadable recording.
///
/// `field` is the canonical name of the thing that is wrong:
/// - an EDF/BDF header field (`"number of data records"`, `"digital maximum"`, ...); `offset` is
///   the byte offset of that field (for per-signal fields, of that signal's entry);
/// - `"data record"` for problems in the data area (`offset` = start of the record concerned);
/// - the annotation signal's label (`"EDF Annotations"`) for a malformed TAL (`offset` = the
///   offending byte);
/// - an OpenBCI column name (`"EXG Channel 3"`) or header line (`"%Sample Rate"`), `offset` =
///   byte offset of the line, the problem text starts with the 1-based line number;
/// - `"file"` for I/O errors (`offset` = where the read or seek happened);
/// - `"channels"` for a channel selection that does not fit the file.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatError {
    pub file: PathBuf,
    pub field: String,
    pub offset: u64,
    pub problem: String,
}

/// Header fields of EDF/BDF, as named in the EDF specification (used to word the message).
const EDF_HEADER_FIELDS: &[&str] = &[
    "version",
    "patient identification",
    "recording identification",
    "start date",
    "start time",
    "number of bytes in header",
    "reserved",
    "number of data records",
    "duration of a data record",
    "number of signals",
    "label",
    "transducer type",
    "physical dimension",
    "physical minimum",
    "physical maximum",
    "digital minimum",
    "digital maximum",
    "prefiltering",
    "number of samples per data record",
    "signal reserved",
];

impl FormatError {
    pub fn new(file: &Path, field: impl Into<String>, offset: u64, problem: impl Into<String>) -> Self {
        FormatError { file: file.to_path_buf(), field: field.into(), offset, problem: problem.into() }
    }

    /// An I/O error (field `"file"`) at `offset`, with what was being done.
    pub fn io(file: &Path, offset: u64, doing: &str, err: &std::io::Error) -> Self {
        FormatError::new(file, "file", offset, format!("{doing}: {err}"))
    }

    /// True when `field` is one of the EDF/BDF header fields.
    pub fn is_header_field(&self) -> bool {
        EDF_HEADER_FIELDS.contains(&self.field.as_str())
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.field == "file" {
            write!(f, "{file}: at byte offset {}: {}", self.offset, self.problem)
        } else if self.field == "data record" {
            write!(f, "{file}: data record at byte offset {}: {}", self.offset, self.problem)
        } else if self.is_header_field() {
            write!(f, "{file}: header field \"{}\" at byte offset {}: {}", self.field, self.offset, self.problem)
        } else {
            write!(f, "{file}: field \"{}\" at byte offset {}: {}", self.field, self.offset, self.problem)
        }
    }
}

impl std::error::Error for FormatError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_field_offset_problem() {
        let e =
            FormatError::new(Path::new("/path/S001R04.edf"), "number of data records", 236, "\"abc\" is not a number");
        assert_eq!(
            e.to_string(),
            "/path/S001R04.edf: header field \"number of data records\" at byte offset 236: \"abc\" is not a number"
        );
        let e = FormatError::new(Path::new("/x.txt"), "EXG Channel 2", 999, "line 7: \"q\" is not a number");
        assert_eq!(e.to_string(), "/x.txt: field \"EXG Channel 2\" at byte offset 999: line 7: \"q\" is not a number");
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        let e = FormatError::io(Path::new("/x.edf"), 12, "reading data record 3", &io);
        assert_eq!(e.field, "file");
        assert_eq!(e.to_string(), "/x.edf: at byte offset 12: reading data record 3: eof");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("/x.edf"));
    }
}
