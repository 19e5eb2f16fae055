//! Parsing an asset catalogue CSV (`id,name,type`; `type` optional): all rows valid, or nothing.

use super::{AssetId, AssetKind};

/// One valid row.
pub type CatalogueRow = (AssetId, String, AssetKind);

/// Most characters in an asset name.
pub const MAX_NAME_CHARS: usize = 1024;

/// Parses the whole file. Errors name the file's line ("Line 3: …"); one bad row rejects all.
pub fn parse(bytes: &[u8]) -> Result<Vec<CatalogueRow>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = match reader.headers() {
        Ok(h) => h
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect::<Vec<_>>(),
        Err(e) => return Err(vec![format!("The file is not a readable CSV: {e}")]),
    };
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(name_col)) = (column("id"), column("name")) else {
        return Err(vec![format!(
            "Line 1: the header must be \"id,name,type\" (type optional); found \"{}\".",
            headers.join(",")
        )]);
    };
    let type_col = column("type");
    if let Some(other) = headers
        .iter()
        .find(|h| !["id", "name", "type"].contains(&h.as_str()))
    {
        return Err(vec![format!(
            "Line 1: unknown column \"{other}\"; expected id, name and type."
        )]);
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut first_seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(format!("Line {line}: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            errors.push(format!(
                "Line {line}: expected {} fields, found {}.",
                headers.len(),
                record.len()
            ));
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or_default();
        let id = match AssetId::parse(field(id_col)) {
            Ok(id) => id,
            Err(reason) => {
                errors.push(format!("Line {line}: {reason}"));
                continue;
            }
        };
        let name = field(name_col).to_string();
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            errors.push(format!(
                "Line {line}: the name must have at most {MAX_NAME_CHARS} characters and no control characters."
            ));
            continue;
        }
        let kind = match AssetKind::parse(type_col.map(field).unwrap_or_default()) {
            Ok(k) => k,
            Err(reason) => {
                errors.push(format!("Line {line}: {reason}"));
                continue;
            }
        };
        if let Some(previous) = first_seen.insert(id.clone(), line) {
            errors.push(format!(
                "Line {line}: asset ID \"{id}\" already appears on line {previous}."
            ));
            continue;
        }
        rows.push((id, name, kind));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if rows.is_empty() {
        return Err(vec![
            "The file has no assets (only a header, or nothing).".into(),
        ]);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
