//! Delimited text (CSV, TSV) parser: RFC 4180 quoting (`"` around fields, `""` inside), records
//! ending in `\n` or `\r\n`, newlines allowed inside quoted fields, blank lines outside quoted
//! fields skipped (as pandas' `skip_blank_lines`). Quoting can be turned off for TSV files such as
//! GLUE's. Checked by the unit tests below and by the imdb_sample counts.

use std::path::Path;

use crate::error::{Result, TextError};

/// One record: its fields and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Field values, unquoted.
    pub fields: Vec<String>,
    /// Line where the record starts (for error messages).
    pub line: usize,
}

/// Parses `data` into records, skipping blank lines (an empty line inside a quoted field is kept
/// as text). `path` is only used in error messages.
pub fn parse(data: &str, delimiter: char, quoting: bool, path: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut start_line) = (1, 1);
    let mut chars = data.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoting && at_field_start => {
                let open_line = line;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            line += (ch == '\n') as usize;
                            field.push(ch);
                        }
                        None => {
                            return Err(TextError::Format {
                                path: path.to_path_buf(),
                                line: open_line,
                                msg: "quoted field is never closed".into(),
                            })
                        }
                    }
                }
                at_field_start = false;
            }
            _ if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                // A blank line: nothing since the last record, not even an empty quoted field.
                if !(at_field_start && field.is_empty() && fields.is_empty()) {
                    fields.push(std::mem::take(&mut field));
                    records.push(Record { fields: std::mem::take(&mut fields), line: start_line });
                }
                line += 1;
                start_line = line;
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if !at_field_start || !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push(Record { fields, line: start_line });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc4180() {
        let data = "a,b,c\r\n1,\"x, \"\"y\"\"\nz\",3\n,,\n";
        let r = parse(data, ',', true, Path::new("t.csv")).unwrap();
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[1].fields, ["1", "x, \"y\"\nz", "3"]);
        assert_eq!((r[1].line, r[2].line), (2, 4));
        assert_eq!(r[2].fields, ["", "", ""]);
        let bad = parse("a,\"open\n", ',', true, Path::new("t.csv")).unwrap_err();
        assert!(bad.to_string().contains("t.csv:1"), "{bad}");
        let tsv = parse("s\tl\n\"q\tx\n", '\t', false, Path::new("t.tsv")).unwrap();
        assert_eq!(tsv[1].fields, ["\"q", "x"]);
    }

    #[test]
    fn skips_blank_lines_outside_quotes() {
        let data = "a,b\n\n1,\"x\n\ny\"\r\n\r\n\"\",2\n\n";
        let r = parse(data, ',', true, Path::new("t.csv")).unwrap();
        let fields: Vec<_> = r.iter().map(|r| r.fields.clone()).collect();
        assert_eq!(fields, [vec!["a", "b"], vec!["1", "x\n\ny"], vec!["", "2"]], "{r:?}");
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3, 7], "lines counted across blank ones");
        let tsv = parse("s\tl\r\n\r\nt\t1\r\n\r\n", '\t', false, Path::new("t.tsv")).unwrap();
        assert_eq!(tsv.len(), 2, "{tsv:?}");
        assert!(parse("\n\r\n\n", ',', true, Path::new("t.csv")).unwrap().is_empty());
    }
}
