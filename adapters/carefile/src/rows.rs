//! RFC 4180 rows of decoded CSV text.
//!
//! A quoted cell may hold commas, doubled quotes and line breaks (CRLF, or the bare LF a
//! spreadsheet writes for a line break inside a cell); rows end with CRLF (a bare CR or
//! LF is accepted too). Empty lines are skipped. Rows are numbered from 1 in the order
//! they appear, a header row included, which is how errors name them.

use std::borrow::Cow;

use renkei_sdk::NormalizeError;

/// One row of a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row<'a> {
    /// 1-based row number (the header, when there is one, is row 1).
    pub number: usize,
    /// The cells, unquoted (borrowed from the text unless a doubled quote was undone).
    pub cells: Vec<Cow<'a, str>>,
}

/// Splits `text` into rows.
///
/// Refuses a quoted cell that never closes (the file was cut short, or a quote inside a
/// quoted cell was not doubled: reading on would swallow the rest of the file into one
/// cell) and text after a closing quote other than `,` or the end of the row. A `"`
/// inside an unquoted cell is kept as written, as spreadsheets read it.
///
/// (The `csv` crate builds its parser tables on every reader, which cost more than
/// reading a whole care file: this small reader does the one thing the layouts need.)
pub(crate) fn read_rows(text: &str) -> Result<Vec<Row<'_>>, NormalizeError> {
    let bytes = text.as_bytes();
    let mut rows = Vec::new();
    let mut cells: Vec<Cow<'_, str>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let number = rows.len() + 1;
        let cell = if bytes.get(i) == Some(&b'"') {
            let mut cell = Cow::Borrowed("");
            let mut from = i + 1;
            loop {
                let Some(quote) = next_quote(bytes, from) else {
                    return Err(NormalizeError::at(
                        format!("row {number}"),
                        "a quoted cell opens but never closes: the file is cut short, or a quote inside a quoted cell is not doubled (write \"\" for \")",
                    ));
                };
                let piece = text.get(from..quote).unwrap_or_default();
                if bytes.get(quote + 1) == Some(&b'"') {
                    // A doubled quote: the cell can no longer borrow the text.
                    let owned = cell.to_mut();
                    owned.push_str(piece);
                    owned.push('"');
                    from = quote + 2;
                } else if let Cow::Owned(owned) = &mut cell {
                    owned.push_str(piece);
                    i = quote + 1;
                    break;
                } else {
                    cell = Cow::Borrowed(piece);
                    i = quote + 1;
                    break;
                }
            }
            if !matches!(bytes.get(i), None | Some(b',' | b'\r' | b'\n')) {
                return Err(NormalizeError::at(
                    format!("row {number}, column {}", cells.len() + 1),
                    "text follows the closing quote of a quoted cell: a quote inside a quoted cell must be doubled (\"\")",
                ));
            }
            cell
        } else {
            let end = bytes
                .get(i..)
                .and_then(|rest| rest.iter().position(|b| matches!(b, b',' | b'\r' | b'\n')))
                .map_or(bytes.len(), |n| i + n);
            let cell = Cow::Borrowed(text.get(i..end).unwrap_or_default());
            i = end;
            cell
        };
        cells.push(cell);
        match bytes.get(i) {
            Some(b',') => {
                i += 1;
                // A comma at the very end of the text still ends an (empty) last cell.
                if i == bytes.len() {
                    cells.push(Cow::Borrowed(""));
                    finish_row(&mut rows, &mut cells);
                }
            }
            Some(b'\r') => {
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                finish_row(&mut rows, &mut cells);
            }
            Some(_) => {
                i += 1;
                finish_row(&mut rows, &mut cells);
            }
            None => finish_row(&mut rows, &mut cells),
        }
    }
    Ok(rows)
}

/// The position of the next `"` at or after `from`.
fn next_quote(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|&b| b == b'"')
        .map(|n| from + n)
}

/// Ends the row being read; an empty line (one empty unquoted cell) is no row.
fn finish_row<'a>(rows: &mut Vec<Row<'a>>, cells: &mut Vec<Cow<'a, str>>) {
    let width = cells.len();
    let row = std::mem::replace(cells, Vec::with_capacity(width));
    if row.len() == 1 && row.first().is_some_and(|c| c.is_empty()) {
        return;
    }
    rows.push(Row {
        number: rows.len() + 1,
        cells: row,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(text: &str) -> Vec<Vec<String>> {
        read_rows(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_iter()
            .map(|r| r.cells.into_iter().map(Cow::into_owned).collect())
            .collect()
    }

    #[test]
    fn quoted_cells_keep_commas_doubled_quotes_and_line_breaks() {
        let rows = cells("a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",\"p\r\nq\"\r\n1,2,3,4,5\r\n");
        assert_eq!(
            rows,
            vec![
                vec!["a", "b,c", "say \"hi\"", "x\ny", "p\r\nq"],
                vec!["1", "2", "3", "4", "5"]
            ]
        );
    }

    #[test]
    fn rows_are_numbered_skipping_empty_lines_and_trailing_empty_cells_count() {
        let rows = read_rows("h1,h2\r\n\r\nv1,\r\n").unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].number, 2);
        assert_eq!(rows[1].cells, vec!["v1", ""]);
    }

    #[test]
    fn an_unclosed_quote_is_refused() {
        let err = read_rows("a,b\r\n1,\"open\r\n").err();
        assert_eq!(err.and_then(|e| e.location).as_deref(), Some("row 2"));
    }

    #[test]
    fn text_after_a_closing_quote_is_refused_and_a_bare_quote_kept() {
        let err = read_rows("a,\"b\"c\r\n").err();
        assert_eq!(
            err.and_then(|e| e.location).as_deref(),
            Some("row 1, column 2")
        );
        assert_eq!(cells("5\"3,x"), vec![vec!["5\"3", "x"]]);
    }

    #[test]
    fn empty_quoted_cells_and_rows_without_a_final_line_break_are_read() {
        assert_eq!(cells("\"\",a\r\nb,"), vec![vec!["", "a"], vec!["b", ""]]);
        // A line of one empty cell, quoted or not, is an empty line.
        assert!(cells("\"\"\r\n\r\n").is_empty());
        assert_eq!(cells("x\ry\nz"), vec![vec!["x"], vec!["y"], vec!["z"]]);
    }
}
