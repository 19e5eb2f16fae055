//! Parsing an asset catalogue CSV (`id,name,type`; `type` optional): all rows valid, or nothing.
//!
//! The CSV is read strictly (RFC 4180): a field is either unquoted and free of quotes, or
//! quoted from its first to its last character with inner quotes doubled (`""`). The csv crate
//! has no strict mode (BurntSushi/rust-csv#77) and silently turns `"Q5"x` into `Q5x`, so this
//! file reads the quoting itself. A UTF-8 byte-order mark and CRLF line ends are accepted.

use super::{AssetId, AssetKind};
use std::borrow::Cow;

/// One valid row.
pub type CatalogueRow = (AssetId, String, AssetKind);

/// Most characters in an asset name.
pub const MAX_NAME_CHARS: usize = 1024;

/// Records read between two progress reports.
const PROGRESS_EVERY: usize = 16_384;

/// Parses the whole file. Errors name the file's line ("Line 3: …"); one bad row rejects all.
pub fn parse(bytes: &[u8]) -> Result<Vec<CatalogueRow>, Vec<String>> {
    parse_with_progress(bytes, |_| {})
}

/// [`parse`], telling `progress` now and then how many of the file's bytes have been read.
pub fn parse_with_progress(
    bytes: &[u8],
    mut progress: impl FnMut(usize),
) -> Result<Vec<CatalogueRow>, Vec<String>> {
    let mut records = Records::new(bytes);
    let mut fields = Vec::new();
    let header_line = match records.next_record(&mut fields) {
        None => return Err(vec![NO_ASSETS.into()]),
        Some(Err(malformed)) => return Err(vec![malformed.to_string()]),
        Some(Ok(line)) => line,
    };
    let headers = match fields
        .iter()
        .map(|f| std::str::from_utf8(f).map(|h| h.trim().to_ascii_lowercase()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(headers) => headers,
        Err(_) => return Err(vec![format!("Line {header_line}: {NOT_UTF8}")]),
    };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(name_col)) = (column("id"), column("name")) else {
        return Err(vec![format!(
            "Line {header_line}: the header must be \"id,name,type\" (type optional); found \"{}\".",
            headers.join(",")
        )]);
    };
    let columns = Columns {
        count: headers.len(),
        id: id_col,
        name: name_col,
        kind: column("type"),
    };
    if let Some(other) = headers
        .iter()
        .find(|h| !["id", "name", "type"].contains(&h.as_str()))
    {
        return Err(vec![format!(
            "Line {header_line}: unknown column \"{other}\"; expected id, name and type."
        )]);
    }
    let mut rows = Vec::new();
    // The line of each row, for naming duplicates.
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut read: usize = 0;
    while let Some(record) = records.next_record(&mut fields) {
        read += 1;
        if read.is_multiple_of(PROGRESS_EVERY) {
            progress(records.pos);
        }
        let line = match record {
            Ok(line) => line,
            Err(malformed) => {
                errors.push((malformed.line, malformed.to_string()));
                continue;
            }
        };
        match columns.row(&fields) {
            Ok(Some(row)) => {
                rows.push(row);
                lines.push(line);
            }
            Ok(None) => {}
            Err(reason) => errors.push((line, format!("Line {line}: {reason}"))),
        }
    }
    progress(bytes.len());
    errors.extend(duplicate_ids(&rows, &lines));
    if !errors.is_empty() {
        errors.sort_by_key(|(line, _)| *line);
        return Err(errors.into_iter().map(|(_, e)| e).collect());
    }
    if rows.is_empty() {
        return Err(vec![NO_ASSETS.into()]);
    }
    Ok(rows)
}

const NO_ASSETS: &str = "The file has no assets (only a header, or nothing).";
const NOT_UTF8: &str = "the line is not UTF-8 text; save the file as UTF-8.";

/// Where the header put each column.
struct Columns {
    count: usize,
    id: usize,
    name: usize,
    kind: Option<usize>,
}

impl Columns {
    /// The row of one record, `None` for a blank one, or why it is invalid.
    fn row(&self, fields: &[Cow<'_, [u8]>]) -> Result<Option<CatalogueRow>, String> {
        let (mut id, mut name, mut kind, mut blank) = ("", "", "", true);
        for (i, field) in fields.iter().enumerate() {
            let text = std::str::from_utf8(field)
                .map_err(|_| NOT_UTF8.to_string())?
                .trim();
            blank &= text.is_empty();
            if i == self.id {
                id = text;
            } else if i == self.name {
                name = text;
            } else if Some(i) == self.kind {
                kind = text;
            }
        }
        if blank {
            return Ok(None);
        }
        if fields.len() != self.count {
            return Err(format!(
                "expected {} fields, found {}.",
                self.count,
                fields.len()
            ));
        }
        row(id, name, kind).map(Some)
    }
}

/// One asset by the catalogue's rules (the CSV import's, and the API's): a valid ID, a name of
/// at most [`MAX_NAME_CHARS`] characters without control characters, a known type (empty:
/// image). Text is trimmed.
pub fn row(id: &str, name: &str, kind: &str) -> Result<CatalogueRow, String> {
    let id = AssetId::parse(id.trim())?;
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "the name must have at most {MAX_NAME_CHARS} characters and no control characters."
        ));
    }
    let kind = AssetKind::parse(kind.trim())?;
    Ok((id, name.to_string(), kind))
}

/// Every repeated ID among `rows`, as (index of the repeat, message naming the first, both
/// 1-based): a catalogue lists each asset once.
pub fn repeated_ids(rows: &[CatalogueRow]) -> Vec<(usize, String)> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut repeats = Vec::new();
    for (i, (id, _, _)) in rows.iter().enumerate() {
        match first.get(id.as_str()) {
            Some(&at) => repeats.push((
                i + 1,
                format!("asset ID \"{id}\" already appears as item {at}."),
            )),
            None => {
                first.insert(id.as_str(), i + 1);
            }
        }
    }
    repeats
}

/// "Line 7: asset ID "x" already appears on line 3." for every repeat, by sorting row numbers
/// (a few bytes a row) rather than keeping a second copy of every ID in a map.
fn duplicate_ids(rows: &[CatalogueRow], lines: &[u64]) -> Vec<(u64, String)> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| rows[a].0.as_str().cmp(rows[b].0.as_str()).then(a.cmp(&b)));
    let mut errors = Vec::new();
    for same_id in order.chunk_by(|&a, &b| rows[a].0 == rows[b].0) {
        let first = lines[same_id[0]];
        for &i in &same_id[1..] {
            errors.push((
                lines[i],
                format!(
                    "Line {}: asset ID \"{}\" already appears on line {first}.",
                    lines[i], rows[i].0
                ),
            ));
        }
    }
    errors
}

/// A quoting mistake: the line it is on and the field (1-based) it is in.
#[derive(Debug)]
struct Malformed {
    line: u64,
    field: usize,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    TextAfterClosingQuote,
    QuoteInUnquotedField,
    Unterminated,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (line, field) = (self.line, self.field);
        match self.problem {
            Problem::TextAfterClosingQuote => write!(
                f,
                "Line {line}: field {field} has text after its closing quote; write a quote inside a quoted field twice (\"\")."
            ),
            Problem::QuoteInUnquotedField => write!(
                f,
                "Line {line}: field {field} has a quote (\") but does not start with one; put the whole field in quotes and write each quote inside it twice (\"\")."
            ),
            Problem::Unterminated => write!(
                f,
                "Line {line}: field {field} opens a quote that is never closed."
            ),
        }
    }
}

/// The records of a CSV file held in memory. Fields borrow from the file unless they hold
/// doubled quotes.
struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The line `pos` is on, counting `\n`, `\r\n` and a lone `\r` as line ends.
    line: u64,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        // Past a byte-order mark; `pos` stays an offset into the whole file.
        let pos = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        Self {
            bytes,
            pos,
            line: 1,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Reads the next record that is not an empty line into `fields`: the line it starts on,
    /// or its quoting mistake (the rest of that line is skipped). `None` at the end.
    fn next_record(&mut self, fields: &mut Vec<Cow<'a, [u8]>>) -> Option<Result<u64, Malformed>> {
        fields.clear();
        while self.end_of_line() {}
        self.peek()?;
        let line = self.line;
        loop {
            let field = fields.len() + 1;
            let value = if self.peek() == Some(b'"') {
                self.quoted(field)
            } else {
                self.unquoted(field)
            };
            match value {
                Ok(value) => fields.push(value),
                Err(malformed) => {
                    self.skip_line();
                    return Some(Err(malformed));
                }
            }
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                self.end_of_line();
                return Some(Ok(line));
            }
        }
    }

    /// Consumes a line end if one is next.
    fn end_of_line(&mut self) -> bool {
        match self.peek() {
            Some(b'\n') => self.pos += 1,
            Some(b'\r') if self.bytes.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
            Some(b'\r') => self.pos += 1,
            _ => return false,
        }
        self.line += 1;
        true
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek()
            && b != b'\n'
            && b != b'\r'
        {
            self.pos += 1;
        }
        self.end_of_line();
    }

    /// A field up to the next comma or line end; it must not contain a quote.
    fn unquoted(&mut self, field: usize) -> Result<Cow<'a, [u8]>, Malformed> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b',' | b'\n' | b'\r' => break,
                b'"' => {
                    return Err(Malformed {
                        line: self.line,
                        field,
                        problem: Problem::QuoteInUnquotedField,
                    });
                }
                _ => self.pos += 1,
            }
        }
        Ok(Cow::Borrowed(&self.bytes[start..self.pos]))
    }

    /// A field from its opening quote to its closing one, which a comma or line end must follow.
    fn quoted(&mut self, field: usize) -> Result<Cow<'a, [u8]>, Malformed> {
        let opened_on = self.line;
        self.pos += 1;
        let mut start = self.pos;
        // Only a field with doubled quotes needs its own copy.
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            match self.peek() {
                None => {
                    return Err(Malformed {
                        line: opened_on,
                        field,
                        problem: Problem::Unterminated,
                    });
                }
                Some(b'"') if self.bytes.get(self.pos + 1) == Some(&b'"') => {
                    unescaped
                        .get_or_insert_default()
                        .extend_from_slice(&self.bytes[start..=self.pos]);
                    self.pos += 2;
                    start = self.pos;
                }
                Some(b'"') => break,
                Some(b'\n') => {
                    self.line += 1;
                    self.pos += 1;
                }
                Some(b'\r') if self.bytes.get(self.pos + 1) != Some(&b'\n') => {
                    self.line += 1;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
        let rest = &self.bytes[start..self.pos];
        let value = match unescaped {
            None => Cow::Borrowed(rest),
            Some(mut value) => {
                value.extend_from_slice(rest);
                Cow::Owned(value)
            }
        };
        self.pos += 1;
        match self.peek() {
            None | Some(b',' | b'\n' | b'\r') => Ok(value),
            Some(_) => Err(Malformed {
                line: self.line,
                field,
                problem: Problem::TextAfterClosingQuote,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(rows: &[CatalogueRow]) -> Vec<(&str, &str, AssetKind)> {
        rows.iter()
            .map(|(id, name, kind)| (id.as_str(), name.as_str(), *kind))
            .collect()
    }

    #[test]
    fn reads_rows_with_optional_type_and_any_column_order() {
        let rows =
            parse(b"id,name,type\nBackpack_B,Backpack blue,image\nclip,\"Clip, short\",VIDEO\n")
                .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1, "Clip, short");
        assert_eq!(rows[1].2, AssetKind::Video);
        let rows = parse(b"name,id\nA,a\n").unwrap();
        assert_eq!(rows[0].0.as_str(), "a");
        assert_eq!(rows[0].2, AssetKind::Other);
    }

    #[test]
    fn bad_rows_reject_the_file_with_line_numbers() {
        let errors =
            parse(b"id,name,type\nok,Fine,image\n,No id,image\nx,Bad type,pdf\nok,Again,image\n")
                .unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with("Line 3:"), "{errors:?}");
        assert!(errors[1].starts_with("Line 4:") && errors[1].contains("pdf"));
        assert!(errors[2].starts_with("Line 5:") && errors[2].contains("line 2"));
    }

    #[test]
    fn wrong_header_and_empty_files_are_refused() {
        assert!(parse(b"sku,title\n1,2\n").unwrap_err()[0].contains("header"));
        assert!(parse(b"id,name,colour\n1,2,3\n").unwrap_err()[0].contains("colour"));
        assert!(parse(b"id,name\n").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"\n\n").is_err());
    }

    #[test]
    fn quoted_fields_hold_doubled_quotes_commas_and_surrounding_spaces() {
        let rows = parse(
            b"\"id\",\"name\",\"type\"\n\"a,1\",\"Say \"\"hi\"\", then go\",\"image\"\n\"\"\"q\"\"\",\"\",\n b ,\" padded \",video\n",
        )
        .unwrap();
        assert_eq!(
            names(&rows),
            [
                ("a,1", "Say \"hi\", then go", AssetKind::Image),
                ("\"q\"", "", AssetKind::Other),
                ("b", "padded", AssetKind::Video),
            ]
        );
    }

    #[test]
    fn byte_order_mark_crlf_and_blank_lines_are_accepted() {
        let rows =
            parse(b"\xEF\xBB\xBFid,name,type\r\n\r\na,\"A\",image\r\n , ,\r\nb,B,video").unwrap();
        assert_eq!(
            names(&rows),
            [("a", "A", AssetKind::Image), ("b", "B", AssetKind::Video)]
        );
    }

    #[test]
    fn malformed_quotes_are_errors_on_their_line() {
        let errors = parse(
            b"id,name,type\r\nok,\"Fine, really\",image\r\n\"Q5\"x,\"n\"y,image\r\nQ3,\"ab\"cd\",image\r\nQ4,ab\"cd,image\r\nQ6,\"two\r\nlines\",image\r\nQ7,\"open,image\r\nQ8,x,image\r\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("Line 3: field 1 has text after its closing quote"));
        assert!(errors[1].starts_with("Line 4: field 2 has text after its closing quote"));
        assert!(errors[2].starts_with("Line 5: field 2 has a quote"));
        // A quoted line break is part of the name (refused there), and counts as a line.
        assert!(errors[3].starts_with("Line 6: the name must"));
        assert!(errors[4].starts_with("Line 8: field 2 opens a quote that is never closed"));
    }

    #[test]
    fn a_quote_after_leading_spaces_is_not_an_opening_quote() {
        let errors = parse(b"id,name\na, \"A\"\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("Line 2: field 2 has a quote"),
            "{errors:?}"
        );
        let errors = parse(b"id,name\na,\"A\" \n").unwrap_err();
        assert!(
            errors[0].starts_with("Line 2: field 2 has text after"),
            "{errors:?}"
        );
    }

    #[test]
    fn lines_after_a_quoted_line_break_keep_their_numbers() {
        let errors =
            parse(b"id,name,type\na,\"x\ny\",image\nb,B,pdf\nc,\"y\r\nz\",image\nd,D,gif\n")
                .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        for (error, line) in errors.iter().zip([2, 4, 5, 7]) {
            assert!(error.starts_with(&format!("Line {line}:")), "{errors:?}");
        }
    }

    #[test]
    fn a_malformed_header_or_text_not_in_utf8_is_named() {
        let errors = parse(b"id,\"name\"x\na,A\n").unwrap_err();
        assert!(errors[0].starts_with("Line 1: field 2 has text after"));
        let errors = parse(b"id,name\na,caf\xe9\n").unwrap_err();
        assert!(errors[0].starts_with("Line 2:") && errors[0].contains("UTF-8"));
    }

    #[test]
    fn progress_reaches_the_file_size() {
        let csv: String = std::iter::once("id,name\n".to_string())
            .chain((0..40_000).map(|i| format!("a{i},A\n")))
            .collect();
        let mut seen = Vec::new();
        assert_eq!(
            parse_with_progress(csv.as_bytes(), |n| seen.push(n))
                .unwrap()
                .len(),
            40_000
        );
        assert!(seen.len() >= 3 && seen.is_sorted());
        assert_eq!(seen.last(), Some(&csv.len()));
    }

    fn kind() -> impl Strategy<Value = AssetKind> {
        prop_oneof![
            Just(AssetKind::Image),
            Just(AssetKind::Video),
            Just(AssetKind::Other)
        ]
    }

    /// Text with the characters CSV must quote, no control characters and no edge spaces.
    const TEXT: &str = "[a-zA-Z0-9_,\"é.]([a-zA-Z0-9_ ,\"é.-]{0,12}[a-zA-Z0-9_,\"é.])?";

    fn catalogue() -> impl Strategy<Value = Vec<(String, String, AssetKind)>> {
        prop::collection::vec(
            (TEXT, prop_oneof![Just(String::new()), TEXT], kind()),
            1..30,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (id, name, kind))| (format!("{i}{id}"), name, kind))
                .collect()
        })
    }

    proptest! {
        /// Any catalogue another CSV writer produces reads back as written.
        #[test]
        fn a_valid_catalogue_round_trips(
            rows in catalogue(),
            always_quote in any::<bool>(),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let mut writer = csv::WriterBuilder::new()
                .quote_style(if always_quote { csv::QuoteStyle::Always } else { csv::QuoteStyle::Necessary })
                .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
                .from_writer(if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() });
            writer.write_record(["id", "name", "type"]).unwrap();
            for (id, name, kind) in &rows {
                writer.write_record([id.as_str(), name.as_str(), kind.as_str()]).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let parsed = parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let parsed: Vec<_> = parsed.into_iter().map(|(id, name, kind)| (id.to_string(), name, kind)).collect();
            prop_assert_eq!(parsed, rows);
        }

        /// One quote in the wrong place rejects the file, naming that line and nothing else.
        #[test]
        fn a_misplaced_quote_is_an_error_on_its_line(
            ids in prop::collection::btree_set("[a-z0-9]{1,8}", 1..20),
            bad_row in any::<prop::sample::Index>(),
            field in 0..3usize,
            mistake in 0..3u8,
            at in any::<prop::sample::Index>(),
            crlf in any::<bool>(),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let bad_row = bad_row.index(ids.len());
            let mut csv = format!("id,name,type{end}");
            for (row, id) in ids.iter().enumerate() {
                let mut fields = [id.clone(), format!("Name {id}"), "image".to_string()];
                if row == bad_row {
                    let value = &fields[field];
                    let split = at.index(value.len());
                    fields[field] = match mistake {
                        // After the first character, so the field does not start quoted.
                        0 => format!("{}\"{}", &value[..=split], &value[split + 1..]),
                        1 => format!("\"{}\"{}", &value[..split], &value[split..]),
                        _ => format!("\"{value}"),
                    };
                }
                csv.push_str(&fields.join(","));
                csv.push_str(end);
            }
            let errors = parse(csv.as_bytes()).unwrap_err();
            prop_assert_eq!(errors.len(), 1, "{:?}", errors);
            let expected = format!("Line {}: field {} ", bad_row + 2, field + 1);
            prop_assert!(errors[0].starts_with(&expected), "{:?} in {:?}", errors, csv);
        }
    }
}
