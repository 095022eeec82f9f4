//! TOML loading whose errors name the file, the line and the key.
//!
//! An installer edits these files by hand on a headless box, so a mistake must
//! point at the exact spot: `agent.toml line 14: key `bus[0].baud`: invalid
//! type: string "fast", expected u32`. Type errors come from serde via
//! `serde_path_to_error` (the key path) and toml's spans (the line); semantic
//! checks use `toml::Spanned` fields and [`TomlFileError::at`].

use std::ops::Range;

use serde::de::DeserializeOwned;

/// A mistake in a TOML file, located by line and key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file} line {line}: key `{key}`: {message}")]
pub struct TomlFileError {
    /// File name as the user gave it (or a label such as `builtin:generic_modbus`).
    pub file: String,
    /// 1-based line number; 0 when the error has no position (e.g. an empty file).
    pub line: usize,
    /// Dotted key path, e.g. `bus[0].baud`; `.` for the whole document.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl TomlFileError {
    /// An error at byte span `span` of `text`.
    pub fn at(
        file: &str,
        text: &str,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TomlFileError {
            file: file.to_owned(),
            line: line_of(text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// 1-based line number of byte offset `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Deserialize `text` into `T`, turning any syntax or type error into a
/// [`TomlFileError`] for `file`.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, TomlFileError> {
    let de = toml::Deserializer::parse(text).map_err(|e| from_toml(file, text, ".".into(), &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_path(e.path());
        from_toml(file, text, key, e.inner())
    })
}

/// `bus[0].baud` from serde's path, without the private segments that
/// `toml::Spanned` introduces.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() { ".".into() } else { out }
}

fn from_toml(file: &str, text: &str, key: String, e: &toml::de::Error) -> TomlFileError {
    let line = e.span().map_or(0, |s| line_of(text, s.start));
    TomlFileError {
        file: file.to_owned(),
        line,
        key,
        message: e.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        bus: Vec<Bus>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Bus {
        name: String,
        baud: u32,
    }

    #[test]
    fn a_type_error_names_the_line_and_the_key_path() {
        let text = "# comment\n[[bus]]\nname = \"a\"\nbaud = 9600\n\n[[bus]]\nname = \"b\"\nbaud = \"fast\"\n";
        let err = parse::<Doc>("agent.toml", text).unwrap_err();
        assert_eq!(err.line, 8);
        assert_eq!(err.key, "bus[1].baud");
        assert_eq!(
            err.to_string(),
            "agent.toml line 8: key `bus[1].baud`: invalid type: string \"fast\", expected u32"
        );
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let err = parse::<Doc>("agent.toml", "[[bus]]\nname = \"a\nbaud = 1\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
